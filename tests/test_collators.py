"""The four built-in collators: shapes, padding, masks, errors, and property tests through the
conformance kit over random lengths and batch sizes."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from treadle.collators import CollatorRegistry, get_collator
from treadle.errors import UnknownNameError
from treadle.task import TaskSpec
from treadle.testing.collators import check_collator
from treadle.testing.report import ConformanceError

token_lists = st.lists(
    st.lists(st.integers(3, 258), min_size=1, max_size=24), min_size=1, max_size=12
)


@settings(max_examples=25, deadline=None)
@given(sequences=token_lists, max_seq_len=st.integers(1, 32))
def test_language_modeling_pads_or_truncates_to_the_task_length(
    sequences: list[list[int]], max_seq_len: int
) -> None:
    task = TaskSpec.language_modeling(max_seq_len=max_seq_len)
    batch = check_collator(get_collator(task), [{"input_ids": ids} for ids in sequences]).details[
        "batch"
    ]
    assert batch["input_ids"].shape == (len(sequences), max_seq_len)
    assert batch["input_ids"].dtype == torch.long
    for row, ids in enumerate(sequences):
        kept = ids[:max_seq_len]
        assert batch["input_ids"][row, : len(kept)].tolist() == kept
        assert int(batch["attention_mask"][row].sum()) == len(kept)
        assert batch["labels"][row, len(kept) :].eq(-100).all()
        assert batch["input_ids"][row, len(kept) :].eq(task.pad_token_id).all()


@settings(max_examples=25, deadline=None)
@given(
    samples=st.lists(
        st.tuples(st.lists(st.integers(3, 99), min_size=1, max_size=20), st.integers(0, 4)),
        min_size=1,
        max_size=10,
    )
)
def test_classification_right_pads_to_the_longest_in_the_batch(
    samples: list[tuple[list[int], int]],
) -> None:
    collate = CollatorRegistry().get(
        "classification", task_spec=TaskSpec.classification(num_classes=5)
    )
    batch = check_collator(
        collate, [{"input_ids": ids, "label": label} for ids, label in samples]
    ).details["batch"]
    longest = max(len(ids) for ids, _ in samples)
    assert batch["input_ids"].shape == (len(samples), longest)
    assert batch["labels"].tolist() == [label for _, label in samples]
    for row, (ids, _) in enumerate(samples):
        assert batch["attention_mask"][row].tolist() == [1] * len(ids) + [0] * (longest - len(ids))


@settings(max_examples=25, deadline=None)
@given(
    pairs=st.lists(
        st.tuples(
            st.lists(st.integers(3, 99), min_size=1, max_size=15),
            st.lists(st.integers(3, 99), min_size=1, max_size=15),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_sequence_to_sequence_pads_source_and_target_independently(
    pairs: list[tuple[list[int], list[int]]],
) -> None:
    collate = get_collator(TaskSpec.sequence_to_sequence(max_source_len=64, max_target_len=64))
    samples = [{"input_ids": s, "target_ids": t} for s, t in pairs]
    batch = check_collator(collate, samples).details["batch"]
    assert batch["input_ids"].shape[1] == max(len(s) for s, _ in pairs)
    assert batch["labels"].shape[1] == max(len(t) for _, t in pairs)
    for row, (_, target) in enumerate(pairs):
        labels = batch["labels"][row]
        assert labels[: len(target)].tolist() == target
        assert labels[len(target) :].eq(-100).all()
        # teacher forcing: the decoder sees the target shifted right behind the start token
        assert batch["decoder_input_ids"][row, 1 : len(target)].tolist() == target[:-1]


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.tuples(st.integers(1, 8), st.integers(1, 8)), min_size=1, max_size=6),
    mode=st.sampled_from(["pad", "resize"]),
)
def test_vision_brings_every_image_to_one_size_and_normalizes(
    sizes: list[tuple[int, int]], mode: str
) -> None:
    task = TaskSpec.vision_tiny(preprocessing_config={"resize": mode})
    samples = [
        {"pixel_values": torch.full((1, h, w), 0.5), "label": index % 10}
        for index, (h, w) in enumerate(sizes)
    ]
    batch = check_collator(get_collator(task), samples).details["batch"]
    assert batch["pixel_values"].shape == (len(sizes), 1, 8, 8)
    assert batch["pixel_values"].dtype == torch.float32
    # (0.5 - mean 0.5) / std 0.5 == 0 on every real pixel
    height, width = sizes[0]
    if mode == "pad":
        assert batch["pixel_values"][0, 0, :height, :width].eq(0).all()
    assert batch["labels"].tolist() == [index % 10 for index in range(len(sizes))]


def test_vision_scales_uint8_and_masks_padded_segmentation_labels() -> None:
    collate = CollatorRegistry().get("vision", image_size=4, resize="pad")
    image = torch.full((3, 2, 2), 255, dtype=torch.uint8)
    mask = torch.ones(2, 2, dtype=torch.long)
    batch = collate([{"pixel_values": image, "label": mask}])
    assert batch["pixel_values"][0, :, :2, :2].eq(1.0).all()
    assert batch["labels"].shape == (1, 4, 4)
    assert batch["labels"][0, 2:, :].eq(-100).all()


@settings(max_examples=25, deadline=None)
@given(
    batch_size=st.integers(1, 8),
    width=st.integers(1, 6),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.long]),
)
def test_classification_stacks_input_label_tuples_as_a_tensor_dataset_gives_them(
    batch_size: int, width: int, dtype: torch.dtype
) -> None:
    generator = torch.Generator().manual_seed(batch_size * 10 + width)
    features = (torch.randn(batch_size, width, generator=generator) * 10).to(dtype)
    labels = torch.randint(0, 3, (batch_size,), generator=generator)
    dataset = torch.utils.data.TensorDataset(features, labels)
    collate = get_collator(TaskSpec.classification(num_classes=3, modality="tabular"))
    batch = check_collator(collate, [dataset[i] for i in range(batch_size)]).details["batch"]
    assert set(batch) == {"input", "labels"}
    assert torch.equal(batch["input"], features)
    assert torch.equal(batch["labels"], labels)
    # the same fields as dicts, the label under the collator's own key or under "labels"
    as_dicts = [{"input": features[i], "label": int(labels[i])} for i in range(batch_size)]
    assert all(torch.equal(collate(as_dicts)[key], batch[key]) for key in batch)


def test_classification_stacks_tabular_feature_rows_for_mlp_classifier() -> None:
    collate = get_collator(TaskSpec.classification(num_classes=3, modality="tabular"))
    rows: list[Any] = [{"features": [0.5, 1.5, 2.5], "label": 2, "id": "row-7"}, ([1.0, 2.0], 0)]
    with pytest.raises(ValueError, match=r"sample 1 has no 'features'"):
        collate(rows)
    batch = check_collator(collate, [rows[0], {"features": [1.0, 2.0, 3.0], "labels": 0}]).details[
        "batch"
    ]
    assert set(batch) == {"features", "labels"}  # the text field "id" is left out, as before
    assert batch["features"].dtype == torch.float32
    assert batch["features"].tolist() == [[0.5, 1.5, 2.5], [1.0, 2.0, 3.0]]
    assert batch["labels"].tolist() == [2, 0]


def test_a_tuple_that_is_not_input_and_label_is_refused_with_the_fix() -> None:
    collate = get_collator(TaskSpec.classification(num_classes=3, modality="tabular"))
    x, mask, y = torch.zeros(4), torch.ones(4), torch.tensor(1)
    with pytest.raises(ValueError, match=r"sample 1 is a tuple of 3 items; a tuple sample is "):
        collate([(x, y), (x, mask, y)])
    with pytest.raises(ValueError, match=r"return a dict from the dataset's __getitem__"):
        collate([(x,)])
    with pytest.raises(ValueError, match=r"sample 0 is a list, not a dict of fields or an"):
        collate([[x, y]])


def test_stacked_inputs_of_different_shapes_name_the_sample_and_the_fix() -> None:
    collate = get_collator(TaskSpec.classification(num_classes=3))
    with pytest.raises(ValueError, match=r"sample 1: 'input' has shape \(3,\), sample 0 has"):
        collate([(torch.tensor([5, 6]), 0), (torch.tensor([5, 6, 7]), 1)])
    with pytest.raises(ValueError, match="token ids as 'input_ids' to have them padded"):
        collate([(torch.tensor([5, 6]), 0), (torch.tensor([5, 6, 7]), 1)])
    with pytest.raises(ValueError, match=r"sample 0: 'input' is a str, not a tensor"):
        collate([("some text", 0)])


def test_sequence_collators_refuse_tuples_naming_the_dict_they_take() -> None:
    ids = torch.tensor([3, 4, 5])
    lm = get_collator(TaskSpec.language_modeling(max_seq_len=8))
    with pytest.raises(ValueError, match=r"samples are \{'input_ids': ids\}: the loss shifts"):
        lm([(ids, ids)])
    seq2seq = get_collator(TaskSpec.sequence_to_sequence())
    with pytest.raises(ValueError, match=r"'target_ids': target_ids\}"):
        seq2seq([{"input_ids": ids, "target_ids": ids}, (ids, ids)])


def test_vision_takes_image_label_tuples_of_arrays_as_torchvision_gives_them() -> None:
    numpy = pytest.importorskip("numpy")
    task = TaskSpec.vision_tiny(preprocessing_config={"num_channels": 3, "mean": 0.5})
    collate = get_collator(task)
    height_width_channels = numpy.full((6, 8, 3), 255, dtype=numpy.uint8)
    batch = check_collator(
        collate, [(height_width_channels, 7), (torch.zeros(3, 8, 8), 2)]
    ).details["batch"]
    assert set(batch) == {"input", "labels"}
    assert batch["input"].shape == (2, 3, 8, 8)
    # uint8 scaled to [0, 1], then (x - 0.5) / 0.5; the two bottom rows are padding
    assert batch["input"][0, :, :6, :].eq(1.0).all()
    assert batch["labels"].tolist() == [7, 2]


def test_bad_samples_name_the_index_and_key() -> None:
    collate = get_collator(TaskSpec.classification(num_classes=3))
    with pytest.raises(ValueError, match=r"sample 1.*label"):
        collate([{"input_ids": [4], "label": 0}, {"input_ids": [5]}])
    with pytest.raises(ValueError, match="sample 0"):
        collate([{"input_ids": "text", "label": 0}])
    with pytest.raises(ValueError, match=r"empty|no samples"):
        collate([])
    with pytest.raises(ValueError, match="resize"):
        CollatorRegistry().get("vision", resize="crop")


def test_the_kit_catches_a_collator_that_counts_padding() -> None:
    def leaky(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = get_collator(TaskSpec.language_modeling(max_seq_len=6))(samples)
        return {**batch, "labels": batch["input_ids"].clone()}

    with pytest.raises(ConformanceError, match="masks"):
        check_collator(leaky, [{"input_ids": [3, 4]}])


def test_registry_face_functions_and_errors(plugin_manager: Any) -> None:
    for name in ("classification", "language_modeling", "sequence_to_sequence", "vision"):
        assert name in CollatorRegistry()

    def my_collator(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {"labels": torch.tensor([s["y"] for s in samples])}

    registry = CollatorRegistry(plugin_manager)
    registry.register("custom", my_collator)
    assert registry.get("custom") is my_collator
    with pytest.raises(TypeError, match="no options"):
        registry.get("custom", max_seq_len=3)
    with pytest.raises(UnknownNameError, match="custom"):
        registry.get("nope")
