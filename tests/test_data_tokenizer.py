"""ByteTokenizer round trips, its Hugging Face style call, and adapting other tokenizers."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from treadle.data.tokenizer import ByteTokenizer, text_encoder, tokenizer_pad_id, vocabulary_size

TEXTS = ["", "hello", "héllo wörld ✓", "tabs\tand\nnewlines", "emoji 🐍 and 日本語"]


@pytest.mark.parametrize("text", TEXTS)
def test_encode_then_decode_gives_the_text_back(text: str) -> None:
    tokenizer = ByteTokenizer()
    ids = tokenizer.encode(text)
    assert ids[0] == tokenizer.bos_token_id
    assert ids[-1] == tokenizer.eos_token_id
    assert len(ids) == len(text.encode("utf-8")) + 2
    assert all(0 <= token < 259 for token in ids)
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(torch.tensor(ids)) == text


def test_ids_are_bytes_plus_three_and_specials_are_0_1_2() -> None:
    tokenizer = ByteTokenizer()
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert tokenizer.vocab_size == len(tokenizer) == 259
    assert tokenizer.encode("A", add_special_tokens=False) == [ord("A") + 3]
    assert tokenizer.encode("\x00\xff", add_special_tokens=False) == [3, 195 + 3, 191 + 3]


def test_decode_skips_padding_or_names_the_specials() -> None:
    tokenizer = ByteTokenizer()
    ids = [*tokenizer.encode("ab"), 0, 0]
    assert tokenizer.decode(ids) == "ab"
    assert tokenizer.decode(ids, skip_special_tokens=False) == "<s>ab</s><pad><pad>"
    with pytest.raises(ValueError, match=r"id 300 is outside 0\.\.258"):
        tokenizer.decode([300])


def test_a_cut_character_decodes_to_the_replacement_character() -> None:
    tokenizer = ByteTokenizer()
    ids = tokenizer.encode("é", add_special_tokens=False)
    assert tokenizer.decode(ids[:1]) == "\ufffd"


def test_call_works_like_a_hugging_face_tokenizer() -> None:
    tokenizer = ByteTokenizer()
    single = tokenizer("hi")
    assert single == {"input_ids": [1, 107, 108, 2], "attention_mask": [1, 1, 1, 1]}
    batch = tokenizer(["hi", "hello"], padding=True, return_tensors="pt")
    assert batch["input_ids"].shape == (2, 7)
    assert batch["attention_mask"].tolist()[0] == [1, 1, 1, 1, 0, 0, 0]
    truncated = tokenizer(["hello"], truncation=True, max_length=3, padding="max_length")
    assert truncated["input_ids"] == [[1, 107, 104]]
    with pytest.raises(ValueError, match="padding=True"):
        tokenizer(["a", "abc"], return_tensors="pt")
    with pytest.raises(TypeError, match="takes a str"):
        tokenizer.encode(b"bytes")  # type: ignore[arg-type]


class EncodeOnly:
    """Like tiktoken: encode(text) without add_special_tokens, returning a list."""

    def encode(self, text: str) -> list[int]:
        return [len(word) for word in text.split()]


class HuggingFaceLike:
    """Like a Hugging Face tokenizer called, not encoded: returns a mapping with input_ids."""

    pad_token_id = 5
    vocab_size = 10

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, Any]:
        ids = [7, *[len(word) for word in text.split()]] if add_special_tokens else []
        return {"input_ids": torch.tensor(ids), "attention_mask": [1] * len(ids)}


class EncodingObject:
    """Like the tokenizers library: encode returns an object with .ids."""

    class Encoding:
        def __init__(self, ids: list[int]) -> None:
            self.ids = ids

    def encode(self, text: str) -> Encoding:
        return self.Encoding([1, 2, 3])


def test_text_encoder_adapts_encode_call_and_encoding_objects() -> None:
    assert text_encoder(ByteTokenizer(), add_special_tokens=False)("ab") == [100, 101]
    assert text_encoder(EncodeOnly())("one three") == [3, 5]
    assert text_encoder(HuggingFaceLike())("one three") == [7, 3, 5]
    assert text_encoder(EncodingObject())("x") == [1, 2, 3]
    with pytest.raises(TypeError, match="not a tokenizer"):
        text_encoder(42)


def test_a_tokenizer_returning_no_ids_is_named() -> None:
    class Broken:
        def encode(self, text: str) -> str:
            return text

    with pytest.raises(TypeError, match="Broken returned str"):
        text_encoder(Broken())("x")


def test_vocabulary_size_and_pad_id_of_other_tokenizers() -> None:
    assert vocabulary_size(ByteTokenizer()) == 259
    assert vocabulary_size(HuggingFaceLike()) == 10
    assert vocabulary_size(EncodeOnly()) is None
    assert tokenizer_pad_id(HuggingFaceLike()) == 5
    assert tokenizer_pad_id(EncodeOnly()) is None
