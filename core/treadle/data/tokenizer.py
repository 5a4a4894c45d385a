"""The built-in byte-level tokenizer, and turning text into token ids with it or any other.

``ByteTokenizer`` needs no vocabulary file and no download: every UTF-8 byte is a token, so
any text round-trips. Any object with an ``encode(text)`` method (a Hugging Face tokenizer,
``tiktoken``, ``sentencepiece``, ``tokenizers``) or a Hugging Face style ``__call__`` returning
``{"input_ids": ...}`` can be used instead; :func:`text_encoder` adapts it once::

    from treadle.data import ByteTokenizer

    tokenizer = ByteTokenizer()
    ids = tokenizer.encode("héllo")          # [1, 107, 198, 172, 111, 111, 114, 2]
    assert tokenizer.decode(ids) == "héllo"
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

__all__ = ["ByteTokenizer", "TextEncoder", "text_encoder", "tokenizer_pad_id", "vocabulary_size"]

#: A function from one text to its token ids.
TextEncoder = Callable[[str], list[int]]


class ByteTokenizer:
    """UTF-8 bytes as tokens: id 0 is padding, 1 begins a text, 2 ends it, byte ``b`` is
    ``b + 3``; 259 ids in all.

    Usable wherever a Hugging Face tokenizer is expected for plain encoding: ``encode``,
    ``decode``, ``batch_decode``, ``__call__`` (one text or a list, with ``truncation``,
    ``max_length``, ``padding`` and ``return_tensors="pt"``), ``vocab_size``, ``len()`` and the
    ``pad_token_id`` / ``bos_token_id`` / ``eos_token_id`` attributes.
    """

    pad_token_id = 0
    bos_token_id = 1
    eos_token_id = 2
    pad_token = "<pad>"
    bos_token = "<s>"
    eos_token = "</s>"
    #: Ids below this are special tokens; byte ``b`` is ``b + BYTE_OFFSET``.
    BYTE_OFFSET = 3
    vocab_size = 256 + BYTE_OFFSET

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return "ByteTokenizer(vocab_size=259, pad=0, bos=1, eos=2)"

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``: its UTF-8 bytes, between ``bos`` and ``eos`` when
        ``add_special_tokens``.

        :raises TypeError: ``text`` is not a string.
        """
        if not isinstance(text, str):
            msg = f"ByteTokenizer.encode takes a str, got {type(text).__name__}"
            raise TypeError(msg)
        offset = self.BYTE_OFFSET
        ids = [byte + offset for byte in text.encode("utf-8")]
        if add_special_tokens:
            return [self.bos_token_id, *ids, self.eos_token_id]
        return ids

    def decode(self, ids: Iterable[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        """The text of ``ids``; special tokens are skipped (or written as ``<pad>``, ``<s>``,
        ``</s>`` when ``skip_special_tokens`` is false). Bytes that are not valid UTF-8 (a
        sequence cut inside a character) become U+FFFD.

        :raises ValueError: an id outside ``0..258``.
        """
        values = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        names = (self.pad_token, self.bos_token, self.eos_token)
        pieces: list[str] = []
        run = bytearray()
        for value in values:
            token = int(value)
            if not 0 <= token < self.vocab_size:
                msg = f"ByteTokenizer.decode: id {token} is outside 0..{self.vocab_size - 1}"
                raise ValueError(msg)
            if token >= self.BYTE_OFFSET:
                run.append(token - self.BYTE_OFFSET)
            elif not skip_special_tokens:
                pieces.append(run.decode("utf-8", errors="replace"))
                run.clear()
                pieces.append(names[token])
        pieces.append(run.decode("utf-8", errors="replace"))
        return "".join(pieces)

    def batch_decode(
        self, sequences: Iterable[Iterable[int]] | torch.Tensor, skip_special_tokens: bool = True
    ) -> list[str]:
        """:meth:`decode` for each sequence."""
        return [self.decode(ids, skip_special_tokens) for ids in sequences]

    def __call__(
        self,
        text: str | Sequence[str],
        add_special_tokens: bool = True,
        truncation: bool = False,
        max_length: int | None = None,
        padding: bool | str = False,
        return_attention_mask: bool = True,
        return_tensors: str | None = None,
    ) -> dict[str, Any]:
        """Encode one text or a list, as a Hugging Face tokenizer's ``__call__`` does.

        :param truncation: cut each sequence to ``max_length``.
        :param padding: ``True``/``"longest"`` right-pads to the longest in the list,
            ``"max_length"`` to ``max_length``.
        :param return_tensors: ``"pt"`` for ``(batch, length)`` long tensors (padding needed
            when lengths differ); ``None`` for lists.
        :returns: ``input_ids`` and, unless turned off, ``attention_mask``; for one text,
            flat lists (or a batch of one with ``return_tensors="pt"``).
        :raises ValueError: a bad padding or tensor option, or ragged tensors.
        """
        single = isinstance(text, str)
        texts = [text] if isinstance(text, str) else list(text)
        sequences = [self.encode(item, add_special_tokens) for item in texts]
        if truncation and max_length is not None:
            sequences = [ids[:max_length] for ids in sequences]
        masks = [[1] * len(ids) for ids in sequences]
        if padding not in (False, True, "longest", "max_length", "do_not_pad"):
            msg = f"padding must be True, False, 'longest' or 'max_length': {padding!r}"
            raise ValueError(msg)
        if padding in (True, "longest", "max_length"):
            if padding != "max_length":
                target = max(map(len, sequences), default=0)
            elif max_length is None:
                msg = "padding='max_length' needs max_length"
                raise ValueError(msg)
            else:
                target = max_length
            for ids, mask in zip(sequences, masks, strict=True):
                missing = max(target - len(ids), 0)
                ids.extend([self.pad_token_id] * missing)
                mask.extend([0] * missing)
        result: dict[str, Any] = {"input_ids": sequences}
        if return_attention_mask:
            result["attention_mask"] = masks
        if return_tensors is not None:
            if return_tensors != "pt":
                msg = (
                    f"ByteTokenizer returns torch tensors only (return_tensors='pt'), got "
                    f"{return_tensors!r}"
                )
                raise ValueError(msg)
            if len(set(map(len, sequences))) > 1:
                msg = "sequences have different lengths: pass padding=True for tensors"
                raise ValueError(msg)
            return {key: torch.tensor(value, dtype=torch.long) for key, value in result.items()}
        if single:
            return {key: value[0] for key, value in result.items()}
        return result


def text_encoder(tokenizer: Any, *, add_special_tokens: bool = True) -> TextEncoder:
    """A function from one text to its token ids, for ``tokenizer``.

    Accepted: an object with ``encode(text)`` returning a list (or array, tensor, or an object
    with ``.ids`` as the ``tokenizers`` library's ``Encoding``), whose ``add_special_tokens``
    argument is used when it has one; or a callable returning a mapping with ``input_ids``
    (a Hugging Face tokenizer's ``__call__``).

    :raises TypeError: ``tokenizer`` has neither.
    """
    encode = getattr(tokenizer, "encode", None)
    if callable(encode):
        if _takes_argument(encode, "add_special_tokens"):

            def by_encode_with_specials(text: str) -> list[int]:
                return _ids(encode(text, add_special_tokens=add_special_tokens), tokenizer)

            return by_encode_with_specials

        def by_encode(text: str) -> list[int]:
            return _ids(encode(text), tokenizer)

        return by_encode
    if callable(tokenizer):

        def by_call(text: str) -> list[int]:
            output = tokenizer(text, add_special_tokens=add_special_tokens)
            try:
                ids = output["input_ids"]
            except (KeyError, TypeError):
                msg = (
                    f"tokenizer {type(tokenizer).__name__}: calling it returned "
                    f"{type(output).__name__} without 'input_ids'"
                )
                raise TypeError(msg) from None
            return _ids(ids, tokenizer)

        return by_call
    msg = (
        f"{type(tokenizer).__name__} is not a tokenizer: give an object with encode(text) or a "
        f"Hugging Face tokenizer (called, it returns input_ids)"
    )
    raise TypeError(msg)


def vocabulary_size(tokenizer: Any) -> int | None:
    """The number of ids ``tokenizer`` can produce (``vocab_size`` or ``len()``), if known."""
    size = getattr(tokenizer, "vocab_size", None)
    if isinstance(size, int):
        # a Hugging Face tokenizer's len() also counts added tokens
        try:
            return max(size, len(tokenizer))
        except TypeError:
            return size
    try:
        return len(tokenizer)
    except TypeError:
        return None


def tokenizer_pad_id(tokenizer: Any) -> int | None:
    """``tokenizer.pad_token_id`` when it is an int, else ``None``."""
    pad = getattr(tokenizer, "pad_token_id", None)
    return pad if isinstance(pad, int) and not isinstance(pad, bool) else None


def _takes_argument(function: Callable[..., Any], name: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False
    return name in parameters or any(
        parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values()
    )


def _ids(value: Any, tokenizer: Any) -> list[int]:
    if hasattr(value, "ids") and not isinstance(value, (list, tuple)):
        value = value.ids  # tokenizers.Encoding
    if hasattr(value, "tolist"):
        value = value.tolist()  # numpy arrays and tensors
    if isinstance(value, (list, tuple)) and len(value) == 1 and isinstance(value[0], (list, tuple)):
        value = value[0]  # a batch of one
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(item, int) and not isinstance(item, bool) and item >= 0 for item in value
    ):
        msg = (
            f"tokenizer {type(tokenizer).__name__} returned {type(value).__name__}, not a list "
            f"of non-negative int ids"
        )
        raise TypeError(msg)
    return list(value)
