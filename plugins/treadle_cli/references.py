"""What a user typed to name a row of a store, turned into what the store looks it up by: a
schedule or a run by its id or by the name its ``list`` shows, a model by any model
reference. Every command that takes one of these resolves it here, so they all accept the
same forms and refuse a bad one with the same message."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from treadle.errors import ConfigError, UnknownNameError
from treadle.model_loading import parse_model_ref

if TYPE_CHECKING:
    from treadle.experiments import ExperimentDB
    from treadle.jobs.scheduler import TrainingScheduler
    from treadle.model_registry import ModelRegistry
    from treadle.storage import ModelRegistryEntry

__all__ = [
    "ID_OR_NAME_HELP",
    "find_model",
    "find_run_id",
    "find_schedule_id",
    "model_reference",
    "resolve_id",
]

#: the help text of an argument :func:`resolve_id` reads
ID_OR_NAME_HELP = "an id, or the name `list` shows when no other row has it"
#: how many names an unknown-name message lists before it points at ``list``
_NAMES_SHOWN = 20


def resolve_id(
    text: str,
    *,
    kind: str,
    ids_named: Callable[[str], Sequence[int]],
    names: Callable[[], Iterable[str]],
    listing: str,
) -> int:
    """The id ``text`` names: ``text`` itself when it is all digits (so ids keep working, and a
    name made of digits is read as an id), else the one row whose name it is.

    :param kind: what a row is, for messages (``schedule``, ``run``).
    :param ids_named: the ids of the rows named exactly so.
    :param names: every row's name; asked only when ``text`` names none.
    :param listing: the command that lists the rows (``treadle schedule list``).
    :raises ConfigError: several rows have the name; the message lists their ids.
    :raises UnknownNameError: no row has it; the message lists the names that exist.
    """
    reference = text.strip()
    if reference.isdigit():
        return int(reference)
    found = sorted(ids_named(reference))
    if len(found) == 1:
        return found[0]
    if found:
        msg = (
            f"{len(found)} {kind}s are named {reference!r} (ids {', '.join(map(str, found))}); "
            f"pass the id of the one you mean"
        )
        raise ConfigError(msg)
    msg = f"No {kind} named {reference!r}. {_known_names(kind, reference, names(), listing)}"
    raise UnknownNameError(msg)


def _known_names(kind: str, reference: str, names: Iterable[str], listing: str) -> str:
    """The names there are, for a message about a name none of the rows has; and the one
    closest to ``reference``."""
    known = sorted(set(names))
    if not known:
        return f"There are no {kind}s ({listing})."
    shown = ", ".join(known[:_NAMES_SHOWN])
    if len(known) > _NAMES_SHOWN:
        shown += f" and {len(known) - _NAMES_SHOWN} more ({listing})"
    text = f"{kind.capitalize()} names: {shown}."
    close = difflib.get_close_matches(reference, known, n=1)
    if close:
        text += f" Did you mean {close[0]!r}?"
    return text


def find_schedule_id(scheduler: TrainingScheduler, text: str) -> int:
    """The id of the schedule ``text`` names: its id or its name."""
    return resolve_id(
        text,
        kind="schedule",
        ids_named=lambda name: [
            schedule.schedule_id
            for schedule in scheduler.store.schedules()
            if schedule.name == name
        ],
        names=lambda: [schedule.name for schedule in scheduler.store.schedules()],
        listing="treadle schedule list",
    )


def find_run_id(db: ExperimentDB, text: str) -> int:
    """The id of the experiment run ``text`` names: its id or its run name."""
    return resolve_id(
        text,
        kind="run",
        ids_named=lambda name: [run.run_id for run in db.find_runs(name=name)],
        names=lambda: [run.run_name for run in db.find_runs()],
        listing="treadle runs list",
    )


def model_reference(text: str) -> dict[str, Any]:
    """``ModelRegistry.get_model`` keyword arguments for a model reference: ``42`` (its id),
    ``gpt:1.0.0``, ``:1.0.0``, ``@production`` (a tag), or ``gpt``, the name ``registry list``
    shows, for that model's newest non-retired version.

    :raises ConfigError: an empty reference, or ``@`` or ``:`` forms that do not parse.
    """
    try:
        return parse_model_ref(text)
    except ConfigError:
        name = text.strip()
        if not name or name.startswith(("@", ":")):
            raise
        return {"name": name}


def find_model(registry: ModelRegistry, text: str) -> ModelRegistryEntry:
    """The model version ``text`` names (:func:`model_reference`).

    :raises UnknownNameError: nothing matches; for a name no model has, the message lists the
        model names there are.
    """
    reference = model_reference(text)
    try:
        return registry.get_model(**reference)
    except UnknownNameError as err:
        if set(reference) != {"name"}:
            raise
        names = [entry.name for entry in registry.store.find_models(limit=None)]
        if reference["name"] in names:  # it has only retired versions: the message says so
            raise
        known = _known_names("model", reference["name"], names, "treadle registry list")
        msg = f"{err} {known}"
        raise UnknownNameError(msg) from err
