"""The stores a page reads, through treadle's facades only: ExperimentDB, ModelRegistry and
TrainingScheduler (whose JobManager is the queue). No SQL here, so any storage plugin works.

A lock serializes calls: the built-in stores are safe across threads, but the store protocols
do not promise it for a third party's, and the server answers requests on a thread pool.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from treadle_ui.settings import StoreLocations, display_location

if TYPE_CHECKING:
    from treadle.experiments import ExperimentDB
    from treadle.jobs.manager import JobManager
    from treadle.jobs.scheduler import TrainingScheduler
    from treadle.model_registry import ModelRegistry
    from treadle.plugins import PluginManager

__all__ = ["StoreReader"]


class StoreReader:
    """The three stores, opened once; :meth:`reading` holds the lock around a page's calls.

    :raises StorageError: a location cannot be opened (named).
    """

    def __init__(
        self, locations: StoreLocations, *, plugin_manager: PluginManager | None = None
    ) -> None:
        from treadle.experiments import ExperimentDB
        from treadle.jobs.scheduler import TrainingScheduler
        from treadle.model_registry import ModelRegistry

        self.locations = locations
        self._lock = threading.RLock()
        opened: list[ExperimentDB | ModelRegistry | TrainingScheduler] = []
        try:
            self.experiments: ExperimentDB = ExperimentDB(
                locations.experiments, plugin_manager=plugin_manager
            )
            opened.append(self.experiments)
            self.registry: ModelRegistry = ModelRegistry(
                locations.models, plugin_manager=plugin_manager
            )
            opened.append(self.registry)
            self.scheduler: TrainingScheduler = TrainingScheduler(
                locations.jobs, plugin_manager=plugin_manager
            )
        except BaseException:
            for store in opened:
                store.close()
            raise

    @property
    def jobs(self) -> JobManager:
        return self.scheduler.manager

    @property
    def shown_locations(self) -> list[tuple[str, str]]:
        """``(what, location)`` to show in the page header, passwords masked; one entry
        when all three stores share a location."""
        where = self.locations
        if where.experiments == where.models == where.jobs:
            return [("store", display_location(where.experiments))]
        return [
            ("runs", display_location(where.experiments)),
            ("models", display_location(where.models)),
            ("jobs", display_location(where.jobs)),
        ]

    @contextmanager
    def reading(self) -> Iterator[StoreReader]:
        with self._lock:
            yield self

    def close(self) -> None:
        with self._lock:
            self.experiments.close()
            self.registry.close()
            self.scheduler.close()
