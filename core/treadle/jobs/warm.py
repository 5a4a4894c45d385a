"""Preloaded by the job fork server, and only there: importing this module loads every plugin
and the modules each registered job type lists in its ``preload`` attribute (torch and the
engine for the built-in types), so each job child forked afterwards starts with them in memory.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys

from treadle.errors import TreadleError
from treadle.jobs.child import SYS_PATH_ENV
from treadle.plugins import get_plugin_manager

logger = logging.getLogger(__name__)


def preload_job_types() -> list[str]:
    """Fill the job types registry and import what each job type lists in ``preload``;
    returns the modules imported. A broken plugin or module is left to the job that needs it,
    which then fails with the error."""
    try:
        entries = get_plugin_manager().registry("job_types").entries()
    except TreadleError as err:
        logger.debug("fork server not warmed: %s", err)
        return []
    imported: list[str] = []
    for entry in entries:
        try:
            preload = getattr(entry.obj, "preload", ())  # imports a registered reference
        except TreadleError as err:
            logger.debug("job type %r not preloaded: %s", entry.name, err)
            continue
        for module in preload:
            try:
                importlib.import_module(module)
            except Exception as err:  # the job reports it when it runs
                logger.debug("preload of %s for job type %r failed: %s", module, entry.name, err)
            else:
                imported.append(module)
    return imported


def adopt_worker_sys_path() -> None:
    """Take the worker's ``sys.path`` (see :data:`~treadle.jobs.child.SYS_PATH_ENV`), so that
    discovery here finds the plugins the worker finds; the variable is removed, so the job
    children do not inherit it."""
    raw = os.environ.pop(SYS_PATH_ENV, None)
    if raw:
        sys.path[:] = [str(entry) for entry in json.loads(raw)]


adopt_worker_sys_path()
preload_job_types()
