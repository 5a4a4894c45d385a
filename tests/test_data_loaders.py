"""DataLoaderFactory and the resumable samplers: the same batches from the same seed, exact
skipping for resume, per-rank shards, and batches through the task's collators."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, default_collate

import treadle_collators.plugin
from treadle.data import (
    DataLoaderConfig,
    DataLoaderFactory,
    DistributedResumableSampler,
    ImageDataset,
    ResumableSampler,
    TokenBlocks,
)
from treadle.plugins import PluginManager
from treadle.task import TaskSpec
from treadle.testing import isolated_plugin_manager


@pytest.fixture
def manager() -> PluginManager:
    manager = isolated_plugin_manager(("collators", treadle_collators.plugin))
    manager.registry("collators").register("stack", default_collate)
    return manager


class Noisy(Dataset[dict[str, torch.Tensor]]):
    """Index plus random draws from torch, random and numpy: shows order and worker seeds."""

    def __len__(self) -> int:
        return 23

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        import numpy

        draws = [torch.rand(()).item(), random.random(), float(numpy.random.rand())]
        return {"index": torch.tensor(index), "draws": torch.tensor(draws)}


def stack_task() -> TaskSpec:
    task = TaskSpec.classification("noisy", num_classes=2, modality="tabular")
    return attrs.evolve(task, collator="stack")


def batches(loader: DataLoader[Any]) -> list[dict[str, torch.Tensor]]:
    return list(loader)


def same(first: list[dict[str, torch.Tensor]], second: list[dict[str, torch.Tensor]]) -> bool:
    return len(first) == len(second) and all(
        a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        for a, b in zip(first, second, strict=True)
    )


def make_loader(manager: PluginManager, seed: int, workers: int, **config: Any) -> DataLoader[Any]:
    factory = DataLoaderFactory(
        stack_task(), seed=seed, num_workers=workers, plugin_manager=manager
    )
    return factory.create_loader(Noisy(), DataLoaderConfig(batch_size=5, **config))


def indices(loader: DataLoader[Any]) -> list[int]:
    # without workers the draws come from the main process's RNG, which the trainer seeds
    order: list[int] = torch.cat([batch["index"] for batch in loader]).tolist()
    return order


def test_two_factories_with_one_seed_give_the_same_batches(manager: PluginManager) -> None:
    first = indices(make_loader(manager, seed=7, workers=0))
    assert first == indices(make_loader(manager, seed=7, workers=0))
    assert sorted(first) == list(range(23))
    assert first != list(range(23))
    assert indices(make_loader(manager, seed=8, workers=0)) != first


def test_workers_are_seeded_so_two_runs_draw_the_same_numbers(manager: PluginManager) -> None:
    first = batches(make_loader(manager, seed=7, workers=2))
    second = batches(make_loader(manager, seed=7, workers=2))
    assert same(first, second)
    assert torch.cat([b["index"] for b in first]).tolist() == indices(make_loader(manager, 7, 0))
    draws = torch.cat([batch["draws"] for batch in first])
    assert len(set(draws[:, 1].tolist())) == len(draws)  # workers do not repeat each other


def test_the_loader_options_follow_the_machine(manager: PluginManager) -> None:
    factory = DataLoaderFactory(
        stack_task(), pin_memory=True, num_workers=2, plugin_manager=manager
    )
    loader = factory.create_loader(Noisy(), DataLoaderConfig(batch_size=4, prefetch_factor=3))
    assert loader.pin_memory == torch.cuda.is_available()
    assert loader.persistent_workers is True
    assert loader.num_workers == 2
    assert loader.prefetch_factor == 3
    assert loader.worker_init_fn is not None
    single = factory.create_loader(Noisy(), DataLoaderConfig(batch_size=4, num_workers=0))
    assert single.num_workers == 0
    assert single.persistent_workers is False
    assert isinstance(loader.sampler, ResumableSampler)


def test_an_evaluation_loader_keeps_order_and_every_sample(manager: PluginManager) -> None:
    factory = DataLoaderFactory(stack_task(), num_workers=0, plugin_manager=manager)
    config = DataLoaderConfig(batch_size=5, shuffle=True, drop_last=True)
    loader = factory.create_loader(Noisy(), config, is_eval=True)
    indices = torch.cat([batch["index"] for batch in loader]).tolist()
    assert indices == list(range(23))
    train = factory.create_loader(Noisy(), config)
    assert len(train) == 4
    assert len(list(train)) == 4


def test_bad_configs_and_iterable_datasets_are_refused(manager: PluginManager) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        DataLoaderConfig(batch_size=0)
    with pytest.raises(ValueError, match="prefetch_factor"):
        DataLoaderConfig(prefetch_factor=0)

    class Stream(IterableDataset[int]):
        def __iter__(self) -> Any:
            return iter(range(3))

    factory = DataLoaderFactory(stack_task(), num_workers=0, plugin_manager=manager)
    with pytest.raises(TypeError, match="map-style dataset"):
        factory.create_loader(Stream())


def test_language_modeling_blocks_flow_through_the_collator(manager: PluginManager) -> None:
    task = TaskSpec.language_modeling(max_seq_len=8)
    dataset = TokenBlocks(torch.arange(3, 3 + 8 * 5 + 3), block_size=8)
    assert len(dataset) == 6  # five full blocks and a tail of three
    factory = DataLoaderFactory(task, num_workers=0, plugin_manager=manager)
    loader = factory.create_loader(dataset, DataLoaderConfig(batch_size=6, shuffle=False))
    batch = next(iter(loader))
    assert batch["input_ids"].shape == (6, 8)
    assert batch["attention_mask"][5].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert batch["labels"][5].tolist()[3:] == [-100] * 5


def test_images_flow_through_the_vision_collator(manager: PluginManager) -> None:
    images = torch.rand(10, 1, 8, 8)
    dataset = ImageDataset(images, torch.arange(10) % 10)
    factory = DataLoaderFactory(TaskSpec.vision_tiny(), num_workers=0, plugin_manager=manager)
    loader = factory.create_loader(dataset, DataLoaderConfig(batch_size=4, shuffle=False))
    batch = next(iter(loader))
    assert batch["pixel_values"].shape == (4, 1, 8, 8)
    assert torch.allclose(batch["pixel_values"], (images[:4] - 0.5) / 0.5)
    assert batch["labels"].tolist() == [0, 1, 2, 3]


# -- samplers ---------------------------------------------------------------------------------


def test_the_order_depends_only_on_seed_and_epoch() -> None:
    sampler = ResumableSampler(50, seed=1)
    epoch_0 = list(sampler)
    sampler.set_epoch(1)
    epoch_1 = list(sampler)
    assert sorted(epoch_0) == sorted(epoch_1) == list(range(50))
    assert epoch_0 != epoch_1
    fresh = ResumableSampler(list(range(50)), seed=1)
    fresh.set_epoch(1)
    assert list(fresh) == epoch_1
    assert list(ResumableSampler(50, seed=2)) != epoch_0
    assert list(ResumableSampler(5, shuffle=False)) == [0, 1, 2, 3, 4]


def test_set_start_skips_exactly_the_consumed_samples_once() -> None:
    sampler = ResumableSampler(30, seed=5)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_start(7)
    assert len(sampler) == 23
    assert list(sampler) == full[7:]
    assert list(sampler) == full, "only the next pass starts late"
    sampler.set_start(30)
    assert list(sampler) == []
    with pytest.raises(ValueError, match="the epoch holds 30 samples"):
        sampler.set_start(31)
    sampler.load_state_dict({"epoch": 2, "start": 4, "seed": 5})
    assert list(sampler) == full[4:]


def test_position_loader_resumes_a_factory_loader_inside_an_epoch(manager: PluginManager) -> None:
    from treadle.engine.resume import position_loader

    loader = make_loader(manager, seed=3, workers=0)
    epoch = [batch["index"].tolist() for batch in position_loader(loader, 1, 0, 0)]
    resumed = [batch["index"].tolist() for batch in position_loader(loader, 1, 2, 10)]
    assert resumed == epoch[2:]  # two batches of 5 consumed
    assert [batch["index"].tolist() for batch in position_loader(loader, 1, 0, 0)] == epoch
    assert [batch["index"].tolist() for batch in position_loader(loader, 2, 0, 0)] != epoch


def shard(size: int, replicas: int, **options: Any) -> list[list[int]]:
    shards = []
    for rank in range(replicas):
        sampler = DistributedResumableSampler(
            size, num_replicas=replicas, rank=rank, seed=9, **options
        )
        sampler.set_epoch(4)
        shards.append(list(sampler))
        assert len(sampler) == len(shards[-1])
    return shards


def test_distributed_shards_are_disjoint_and_cover_the_data() -> None:
    padded = shard(10, 3)
    assert [len(part) for part in padded] == [4, 4, 4]
    flat = [index for part in padded for index in part]
    assert set(flat) == set(range(10))
    assert len(flat) - len(set(flat)) == 2

    dropped = shard(10, 3, drop_last=True)
    assert [len(part) for part in dropped] == [3, 3, 3]
    flat = [index for part in dropped for index in part]
    assert len(set(flat)) == 9

    exact = shard(10, 3, even_shards=False)
    assert [len(part) for part in exact] == [4, 3, 3]
    assert sorted(index for part in exact for index in part) == list(range(10))

    # the ranks interleave one shared permutation
    sampler = ResumableSampler(10, seed=9)
    sampler.set_epoch(4)
    order = list(sampler)
    assert exact[1] == order[1::3]


def test_a_distributed_shard_resumes_within_the_rank() -> None:
    sampler = DistributedResumableSampler(40, num_replicas=4, rank=2, seed=0)
    sampler.set_epoch(3)
    full = list(sampler)
    sampler.set_start(4)
    assert list(sampler) == full[4:]
    with pytest.raises(ValueError, match=r"rank must lie in 0\.\.num_replicas-1"):
        DistributedResumableSampler(40, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match=r"initialized torch\.distributed"):
        DistributedResumableSampler(40)


def test_the_factory_shards_when_torch_distributed_is_initialized(
    manager: PluginManager, tmp_path: Path
) -> None:
    import torch.distributed as dist

    if not dist.is_available() or dist.is_initialized():
        pytest.skip("needs torch.distributed, not yet initialized")
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", world_size=1, rank=0
    )
    try:
        factory = DataLoaderFactory(stack_task(), num_workers=0, plugin_manager=manager)
        loader = factory.create_loader(Noisy(), DataLoaderConfig(batch_size=5))
        assert isinstance(loader.sampler, DistributedResumableSampler)
        assert (loader.sampler.num_replicas, loader.sampler.rank) == (1, 0)
        evaluation = factory.create_loader(Noisy(), DataLoaderConfig(batch_size=5), is_eval=True)
        assert isinstance(evaluation.sampler, DistributedResumableSampler)
        assert evaluation.sampler.even_shards is False
    finally:
        dist.destroy_process_group()
