"""The stores a page reads, through treadle's facades only: ExperimentDB, ModelRegistry and
TrainingScheduler (whose JobManager is the queue). No SQL here, so any storage plugin works.

A lock serializes the calls on each store object: the built-in stores are safe across
threads, but the store protocols do not promise it for a third party's, and the server answers
requests on a thread pool. Curves have an experiment store of their own, so a live run's poll
(which reads every row of the run) never holds up the other pages.
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
        self._curves_lock = threading.Lock()
        opened: list[ExperimentDB | ModelRegistry | TrainingScheduler] = []
        try:
            self.experiments: ExperimentDB = ExperimentDB(
                locations.experiments, plugin_manager=plugin_manager
            )
            opened.append(self.experiments)
            self._curves: ExperimentDB = ExperimentDB(
                locations.experiments, plugin_manager=plugin_manager
            )
            opened.append(self._curves)
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
        """The stores, for one page's calls."""
        with self._lock:
            yield self

    @contextmanager
    def curves(self) -> Iterator[ExperimentDB]:
        """The experiment store that chart data is read from, for one request."""
        with self._curves_lock:
            yield self._curves

    def close(self) -> None:
        with self._lock, self._curves_lock:
            self._curves.close()
            self.experiments.close()
            self.registry.close()
            self.scheduler.close()
