"""GradientAccumulator: accumulated windows equal one big batch, remainders, clipping, stats."""

from __future__ import annotations

import attrs
import pytest
import torch

from treadle.engine.accumulation import AccumulationStats, GradientAccumulator

# float32 sums 4 partial gradients in another order than one batch of 32: agreement to a few
# ulps; float64 must agree to 1e-12.
TOLERANCES = {torch.float32: 1e-6, torch.float64: 1e-12}


def make_model(dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).to(
        dtype
    )


def make_data(num_samples: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(num_samples, 10, generator=generator, dtype=dtype)
    labels = torch.randint(0, 3, (num_samples,), generator=generator)
    return inputs, labels


def gradients(model: torch.nn.Module) -> list[torch.Tensor]:
    return [
        parameter.grad.clone() for parameter in model.parameters() if parameter.grad is not None
    ]


def full_batch_gradients(
    model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor
) -> list[torch.Tensor]:
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(inputs), labels).backward()
    return gradients(model)


def accumulate(
    model: torch.nn.Module,
    accumulator: GradientAccumulator,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
) -> list[list[torch.Tensor]]:
    """Run an epoch the way the Trainer does; the gradients at each optimizer step."""
    stepped = []
    model.zero_grad()
    accumulator.set_epoch_length(len(batches))
    for index, (inputs, labels) in enumerate(batches):
        loss = torch.nn.functional.cross_entropy(model(inputs), labels)
        scaled = loss * accumulator.loss_scale(index)
        scaled.backward()
        accumulator.record_loss(scaled)
        if accumulator.should_update_optimizer(index):
            stepped.append(gradients(model))
            model.zero_grad()
    return stepped


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_four_accumulated_batches_of_8_equal_one_batch_of_32(dtype: torch.dtype) -> None:
    model = make_model(dtype)
    inputs, labels = make_data(32, dtype)
    expected = full_batch_gradients(model, inputs, labels)
    batches = [(inputs[i : i + 8], labels[i : i + 8]) for i in range(0, 32, 8)]

    (accumulated,) = accumulate(model, GradientAccumulator(accumulation_steps=4), batches)

    for got, want in zip(accumulated, expected, strict=True):
        torch.testing.assert_close(got, want, atol=TOLERANCES[dtype], rtol=TOLERANCES[dtype])


def test_an_epoch_with_a_remainder_steps_on_it_with_the_remainder_scale() -> None:
    dtype = torch.float64
    model = make_model(dtype)
    inputs, labels = make_data(80, dtype)
    batches = [(inputs[i : i + 8], labels[i : i + 8]) for i in range(0, 80, 8)]  # 10 batches
    accumulator = GradientAccumulator(accumulation_steps=4)

    steps = accumulate(model, accumulator, batches)

    assert len(steps) == 3  # windows of 4, 4 and the remainder 2
    assert [accumulator.loss_scale(i) for i in (0, 7, 8, 9)] == [0.25, 0.25, 0.5, 0.5]
    remainder = full_batch_gradients(model, inputs[64:], labels[64:])
    for got, want in zip(steps[-1], remainder, strict=True):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


def test_should_update_optimizer_at_window_ends_and_on_the_last_batch() -> None:
    accumulator = GradientAccumulator(accumulation_steps=4)
    assert [s for s in range(10) if accumulator.should_update_optimizer(s)] == [3, 7]
    assert accumulator.should_update_optimizer(9, is_last_batch=True)
    accumulator.set_epoch_length(10)
    assert [s for s in range(10) if accumulator.should_update_optimizer(s)] == [3, 7, 9]


def test_without_an_epoch_length_the_loss_scale_is_one_over_n() -> None:
    accumulator = GradientAccumulator(accumulation_steps=4)
    assert accumulator.loss_scale(9) == 0.25
    assert accumulator.window_size(9) == 4


def test_effective_step_maps_batches_to_optimizer_steps() -> None:
    accumulator = GradientAccumulator(accumulation_steps=4)
    assert [accumulator.get_effective_step(g) for g in (0, 3, 4, 8)] == [0, 0, 1, 2]
    accumulator.set_epoch_length(10)  # 3 optimizer steps per epoch: 4 + 4 + 2
    assert [accumulator.get_effective_step(g) for g in (9, 10, 14, 20)] == [2, 3, 4, 6]


def set_gradients(model: torch.nn.Module, value: float) -> None:
    for parameter in model.parameters():
        parameter.grad = torch.full_like(parameter, value)


def test_global_clipping_reports_the_norm_before_and_after() -> None:
    model = make_model(torch.float32)
    set_gradients(model, 1.0)
    num_elements = sum(p.numel() for p in model.parameters())
    accumulator = GradientAccumulator(max_gradient_norm=1.0)

    norm = accumulator.clip_gradients(model)

    stats = accumulator.get_statistics()
    assert float(norm) == pytest.approx(num_elements**0.5)
    assert stats["norm_before"] == pytest.approx(num_elements**0.5)
    assert stats["norm_after"] == pytest.approx(1.0, rel=1e-5)
    assert stats["clipped"] is True
    after = torch.linalg.vector_norm(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    assert float(after) == pytest.approx(1.0, rel=1e-5)
    assert stats["num_parameters"] == num_elements


def test_gradients_below_the_limit_are_left_alone() -> None:
    model = make_model(torch.float32)
    set_gradients(model, 1e-3)
    before = gradients(model)
    accumulator = GradientAccumulator(max_gradient_norm=100.0)
    accumulator.clip_gradients(model)
    stats = accumulator.get_statistics()
    assert stats["norm_after"] == pytest.approx(stats["norm_before"])
    assert stats["clipped"] is False
    for got, want in zip(gradients(model), before, strict=True):
        assert torch.equal(got, want)


def test_per_parameter_clipping_bounds_each_gradient_on_its_own() -> None:
    model = make_model(torch.float32)
    set_gradients(model, 1.0)
    model[2].bias.grad = torch.full_like(model[2].bias, 0.01)  # norm 0.017: untouched
    accumulator = GradientAccumulator(max_gradient_norm=0.5, clip_by_global_norm=False)

    accumulator.clip_gradients(model)

    norms = [float(torch.linalg.vector_norm(p.grad)) for p in model.parameters()]
    assert norms[:3] == pytest.approx([0.5, 0.5, 0.5], rel=1e-5)
    assert norms[3] == pytest.approx(0.01 * 3**0.5, rel=1e-5)
    stats = accumulator.get_statistics()
    assert stats["norm_after"] == pytest.approx(sum(n**2 for n in norms) ** 0.5, rel=1e-5)


def test_no_max_norm_measures_without_clipping() -> None:
    model = make_model(torch.float32)
    set_gradients(model, 2.0)
    before = gradients(model)
    accumulator = GradientAccumulator(max_gradient_norm=None)
    accumulator.clip_gradients(model)
    assert accumulator.get_statistics()["norm_before"] > 1.0
    for got, want in zip(gradients(model), before, strict=True):
        assert torch.equal(got, want)


def test_stats_count_backward_passes_optimizer_steps_and_the_window_loss() -> None:
    model = make_model(torch.float64)
    inputs, labels = make_data(32, torch.float64)
    batches = [(inputs[i : i + 8], labels[i : i + 8]) for i in range(0, 32, 8)]
    accumulator = GradientAccumulator(accumulation_steps=2)
    model.zero_grad()
    losses = []
    for index, (batch_inputs, batch_labels) in enumerate(batches):
        loss = torch.nn.functional.cross_entropy(model(batch_inputs), batch_labels) * 0.5
        loss.backward()
        accumulator.record_loss(loss)
        losses.append(float(loss.detach()))
        if accumulator.should_update_optimizer(index):
            accumulator.clip_gradients(model)

    stats = accumulator.get_stats()
    assert isinstance(stats, AccumulationStats)
    assert (stats.global_step, stats.effective_step) == (4, 2)
    assert stats.accumulated_loss == pytest.approx(losses[2] + losses[3])
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        stats.global_step = 0  # type: ignore[misc]
    restored = GradientAccumulator(accumulation_steps=2)
    restored.load_state_dict(accumulator.state_dict())
    assert restored.get_stats().effective_step == 2


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"accumulation_steps": 0}, ValueError),
        ({"accumulation_steps": 2.0}, TypeError),
        ({"max_gradient_norm": 0.0}, ValueError),
        ({"max_gradient_norm": float("nan")}, ValueError),
    ],
)
def test_bad_settings_are_refused_naming_the_parameter(
    options: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error, match=next(iter(options))):
        GradientAccumulator(**options)  # type: ignore[arg-type]


# -- windows by items, as the TrainingLoop drives the accumulator ---------------------------


def test_windows_group_batches_per_optimizer_step_with_a_short_last_one() -> None:
    assert list(GradientAccumulator(accumulation_steps=4).windows(range(10))) == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9],
    ]
    assert list(GradientAccumulator().windows(iter("ab"))) == [["a"], ["b"]]


def test_weigh_a_mean_loss_by_its_share_of_the_windows_items() -> None:
    accumulator = GradientAccumulator(accumulation_steps=2)
    loss = torch.tensor(2.0, requires_grad=True)
    share, reported = accumulator.weigh(loss, 6, 8, divided_by_window=False)
    assert float(share.detach()) == 1.5
    assert share.requires_grad
    assert float(reported) == 2.0
    assert not reported.requires_grad


def test_weigh_a_loss_already_divided_by_the_windows_items_as_it_is() -> None:
    accumulator = GradientAccumulator(accumulation_steps=2)
    loss = torch.tensor(0.75, requires_grad=True)  # 6 items summing to 4.5, divided by 6 + 2
    share, reported = accumulator.weigh(
        loss, torch.tensor(6), torch.tensor(8), divided_by_window=True
    )
    assert share is loss
    assert float(reported) == pytest.approx(1.0), "the batch's own mean, for reports"


def test_weigh_leaves_a_window_of_one_batch_alone_and_needs_items_otherwise() -> None:
    accumulator = GradientAccumulator()
    loss = torch.tensor(3.0, requires_grad=True)
    share, reported = accumulator.weigh(loss, None, None, divided_by_window=False)
    assert share is loss
    assert float(reported) == 3.0
    with pytest.raises(TypeError, match="needs its items"):
        accumulator.weigh(loss, None, 8, divided_by_window=False)


def test_weighed_windows_equal_one_batch_and_keep_the_statistics() -> None:
    dtype = torch.float64
    model = make_model(dtype)
    inputs, labels = make_data(24, dtype)
    expected = full_batch_gradients(model, inputs, labels)
    model.zero_grad()
    accumulator = GradientAccumulator(accumulation_steps=3)
    sizes = (12, 8, 4)  # uneven batches: weighed by items, not by 1/3 each
    starts = (0, 12, 20)
    batches = [(inputs[a : a + n], labels[a : a + n]) for a, n in zip(starts, sizes, strict=True)]
    (window,) = accumulator.windows(batches)
    for (batch_inputs, batch_labels), items in zip(window, sizes, strict=True):
        loss = torch.nn.functional.cross_entropy(model(batch_inputs), batch_labels)
        share, _ = accumulator.weigh(loss, items, sum(sizes), divided_by_window=False)
        share.backward()
    for got, want in zip(gradients(model), expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)

    norm = accumulator.end_window(model, 0.1)
    assert norm is not None
    stats = accumulator.get_stats()
    assert (stats.global_step, stats.effective_step) == (3, 1)
    full_loss = torch.nn.functional.cross_entropy(model(inputs), labels)
    assert stats.accumulated_loss == pytest.approx(float(full_loss.detach()), rel=1e-12)
    after = torch.linalg.vector_norm(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    assert stats.norm_before_clip == pytest.approx(float(norm))
    assert stats.norm_after_clip == pytest.approx(float(after), rel=1e-9)


def test_end_window_without_a_limit_counts_the_step_and_leaves_gradients_alone() -> None:
    model = make_model(torch.float32)
    set_gradients(model, 5.0)
    before = gradients(model)
    accumulator = GradientAccumulator(accumulation_steps=2)
    assert accumulator.end_window(model, None) is None
    assert accumulator.get_stats().effective_step == 1
    for got, want in zip(gradients(model), before, strict=True):
        assert torch.equal(got, want)


def test_end_window_clips_per_parameter_when_the_accumulator_was_made_so() -> None:
    model = make_model(torch.float32)
    set_gradients(model, 1.0)
    accumulator = GradientAccumulator(max_gradient_norm=100.0, clip_by_global_norm=False)
    accumulator.end_window(model, 0.5)  # the loop's limit, not the accumulator's own
    norms = [float(torch.linalg.vector_norm(p.grad)) for p in model.parameters()]
    assert norms == pytest.approx([0.5] * 4, rel=1e-5)
