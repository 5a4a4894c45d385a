"""Property tests of every entry point that reads a config or a location from a user (issue 14,
RELIABILITY X3): the config loader (files and ``--set`` values), each job type's
``validate_config`` through :meth:`JobManager.submit_job`, and :func:`open_store` URLs.

The property, for arbitrary bytes, arbitrary JSON, and text shaped like the real thing: the
input is taken, or refused with a :class:`~treadle.errors.TreadleError` subclass whose message
says something; never another exception type, never a hang (a deadline), a file read is left
as it was, and a refused location leaves nothing on disk.

Each property tries a bounded number of inputs (``EXAMPLES``), always the same ones
(``derandomize``), with a deadline generous enough for a loaded 2-core machine.
"""

from __future__ import annotations

import json
import os
import re
import string
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import treadle_jobs.plugin
import treadle_sqlite.plugin
from treadle.config import TrainingConfig
from treadle.errors import TreadleError
from treadle.jobs.manager import JobManager
from treadle.plugins import PluginManager
from treadle.run_setup import resolve_config
from treadle.storage import STORE_KINDS, open_store
from treadle.testing import isolated_plugin_manager

#: Inputs each property tries: about 1-5 s apiece on this machine.
EXAMPLES = 150
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=5),  # a hang fails; a loaded machine does not
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,  # the same inputs on every run: a failure here is a bug, not luck
)

MANAGER: PluginManager = isolated_plugin_manager(
    ("jobs", treadle_jobs.plugin), ("sqlite", treadle_sqlite.plugin)
)

FIELD_NAMES = [field.name for field in attrs.fields(TrainingConfig)]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
#: TrainingConfig-shaped objects: real field names (and near misses) with arbitrary values.
config_objects = st.dictionaries(
    st.sampled_from(FIELD_NAMES) | st.text(max_size=12), json_values, max_size=6
)


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


#: A list field given a string or an object, which a lax converter splits into letters or keys.
container_mixups = st.tuples(
    st.sampled_from(["loggers", "export_formats", "adam_betas", "plugins"]),
    st.text(max_size=8) | st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
).map(lambda case: dict([case]))
#: Lists nested up to 3,000 deep (Python's parsers recurse; a limit must hold first).
deep_values = (st.sampled_from([64, 65, 999, 3000]) | st.integers(0, 3000)).map(_nested)
deep_json_text = st.tuples(st.sampled_from(FIELD_NAMES), st.integers(0, 3000)).map(
    lambda case: f'{{"{case[0]}": ' + "[" * case[1] + "]" * case[1] + "}"
)
#: Text made of the characters JSON and TOML give meaning to, so parsers meet their edge cases.
json_text = st.text(alphabet='[]{}:,"\\ \n0123456789.eE+-truefalsnNaIiy\x00\u00e9', max_size=200)
toml_text = st.text(alphabet="[]{}.=\"'#\n\t ,abc_-0123456789+:TZ\\\u00e9", max_size=200)


def refusal(error: BaseException, naming: str = "") -> None:
    """The refusal promise: treadle's own error type, with a message (naming ``naming``)."""
    assert isinstance(error, TreadleError), f"{type(error).__name__}: {error}"
    assert str(error).strip(), "an error says what is wrong"
    assert naming in str(error), f"the message names {naming!r}"


@contextmanager
def config_file(suffix: str, content: bytes) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="treadle-fuzz-") as folder:
        path = Path(folder) / f"config{suffix}"
        path.write_bytes(content)
        yield path


def load_checked(path: Path) -> None:
    """``TrainingConfig.load(path)`` under the promise, the file unchanged either way."""
    before = path.read_bytes(), path.stat().st_mtime_ns
    try:
        config = TrainingConfig.load(path)
    except Exception as error:
        refusal(error, naming=str(path))
    else:
        assert isinstance(config, TrainingConfig)
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


# -- the config loader: files ---------------------------------------------------------------


@FUZZ
@given(suffix=st.sampled_from([".json", ".toml", ".cfg"]), content=st.binary(max_size=400))
def test_x3_arbitrary_bytes_as_a_config_file_load_or_are_refused_naming_it(
    suffix: str, content: bytes
) -> None:
    with config_file(suffix, content) as path:
        load_checked(path)


@FUZZ
@given(
    data=st.one_of(
        json_text.map(lambda text: (".json", text)),
        deep_json_text.map(lambda text: (".json", text)),
        toml_text.map(lambda text: (".toml", text)),
    )
)
def test_x3_text_shaped_like_json_or_toml_loads_or_is_refused_naming_the_file(
    data: tuple[str, str],
) -> None:
    suffix, text = data
    with config_file(suffix, text.encode("utf-8", "surrogatepass")) as path:
        load_checked(path)


@FUZZ
@given(document=json_values | config_objects)
def test_x3_arbitrary_json_as_a_config_file_loads_or_is_refused_naming_the_file(
    document: Any,
) -> None:
    with config_file(".json", json.dumps(document).encode()) as path:
        load_checked(path)


def _as_written(given: Any, kept: Any) -> bool:
    """Whether ``kept`` (the config's plain data) holds ``given`` as written: every given key
    with its value (lists and tuples alike, 1 and 1.0 alike), nothing split or coerced."""
    if isinstance(given, dict):
        return isinstance(kept, dict) and all(
            key in kept and _as_written(value, kept[key]) for key, value in given.items()
        )
    if isinstance(given, list | tuple):
        return (
            isinstance(kept, list | tuple)
            and len(given) == len(kept)
            and all(_as_written(a, b) for a, b in zip(given, kept, strict=True))
        )
    same_kind = type(given) is type(kept) or (
        isinstance(given, int) and not isinstance(given, bool) and isinstance(kept, float)
    )
    return same_kind and given == kept


@FUZZ
@given(
    document=config_objects
    | container_mixups
    | st.tuples(st.sampled_from(FIELD_NAMES), json_values).map(lambda case: dict([case]))
    | st.tuples(st.sampled_from(FIELD_NAMES), deep_values).map(lambda case: dict([case]))
)
def test_x3_arbitrary_json_through_from_dict_is_kept_as_written_or_refused(
    document: Any,
) -> None:
    try:
        config = TrainingConfig.from_dict(document)
    except Exception as error:
        refusal(error)
    else:
        assert _as_written(document, config.to_dict()), config
        assert TrainingConfig.from_dict(config.to_dict()) == config


# -- the config loader: --set values ---------------------------------------------------------


override_texts = st.one_of(
    st.text(max_size=80),
    st.tuples(st.sampled_from(FIELD_NAMES) | st.text(max_size=10), json_text).map("=".join),
    st.tuples(st.sampled_from(FIELD_NAMES), json_values.map(json.dumps)).map("=".join),
)


@FUZZ
@given(overrides=st.lists(override_texts, max_size=3))
def test_x3_arbitrary_set_values_resolve_or_are_refused(overrides: list[str]) -> None:
    try:
        resolved = resolve_config(None, None, overrides)
    except Exception as error:
        refusal(error)
    else:
        assert isinstance(resolved.config, TrainingConfig)


# -- job configs through submit_job ------------------------------------------------------------

JOB_TYPES = sorted(MANAGER.registry("job_types").names())
#: Keys the built-in job types read, so their validators see shaped configs, not just noise.
JOB_KEYS = [
    "training_config",
    "model",
    "registry_location",
    "formats",
    "overrides",
    "experiment_location",
    "trigger",
    "current_metrics",
    "reference_metrics",
    "drift_score",
    "parent_model",
    "warm_start",
    "timeout_minutes",
]
job_values = json_values | config_objects | st.lists(st.text(max_size=8), max_size=3)
job_configs = st.dictionaries(
    st.sampled_from(JOB_KEYS) | st.text(max_size=10), job_values, max_size=5
)


@pytest.fixture(scope="module")
def job_manager() -> Iterator[JobManager]:
    with (
        tempfile.TemporaryDirectory(prefix="treadle-fuzz-") as folder,
        JobManager(str(Path(folder) / "jobs.db"), plugin_manager=MANAGER) as manager,
    ):
        yield manager


@FUZZ
@given(job_type=st.sampled_from(JOB_TYPES), config=job_configs | json_values)
def test_x3_arbitrary_job_configs_are_queued_or_refused_at_submit(
    job_manager: JobManager, job_type: str, config: Any
) -> None:
    try:
        job_id = job_manager.submit_job(job_type, config)
    except Exception as error:
        refusal(error)
    else:
        assert job_manager.get_job(job_id).config == config


# -- open_store locations ----------------------------------------------------------------------


@contextmanager
def inside_fresh_folder() -> Iterator[Path]:
    """A fresh current folder (relative locations land there) holding an empty file ``afile``
    and a folder ``adir``, given back afterwards."""
    before = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="treadle-fuzz-") as folder:
        os.chdir(folder)
        Path("afile").touch()
        Path("adir").mkdir()
        try:
            yield Path(folder)
        finally:
            os.chdir(before)


def _tree(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


def open_checked(location: str, kind: str) -> None:
    """``open_store`` under the promise; a refused location leaves the folder as it was."""
    with inside_fresh_folder() as folder:
        before = _tree(folder)
        try:
            store = open_store(location, kind, MANAGER)
        except Exception as error:
            refusal(error)
            assert _tree(folder) == before, f"a refused location left {_tree(folder) - before}"
        else:
            store.close()


def _stays_inside(location: str) -> bool:
    """Locations a test may open: relative, not climbing out (a store is created there)."""
    path = location.removeprefix("sqlite:///")
    return not path.startswith(("/", "~")) and ".." not in path and "sqlite:////" not in location


path_text = st.lists(
    st.sampled_from(["afile", "adir", ".", "", "x", "s.db", "n" * 300])
    | st.text(alphabet=string.ascii_letters + string.digits + "._-:?#%@ \x00\n\u00e9", max_size=12),
    min_size=1,
    max_size=4,
).map("/".join)
#: PostgreSQL URLs aimed at a closed local port: refused at once, whatever the rest says.
#: Parameters that could send libpq elsewhere (host, port, service, ...) are left out.
postgres_urls = st.tuples(
    st.sampled_from(["postgresql", "postgres", "POSTGRESQL"]),
    st.text(alphabet=string.ascii_letters + ":%", max_size=10),
    path_text,
    st.text(alphabet=string.ascii_lowercase + "=&%_", max_size=30),
).map(lambda parts: f"{parts[0]}://{parts[1]}@127.0.0.1:9/{parts[2]}?{parts[3]}")


@FUZZ
@given(
    location=st.text(max_size=60)
    | path_text
    | path_text.map("sqlite:///".__add__)
    | path_text.map("sqlite://".__add__)
    | st.tuples(st.text(alphabet=string.ascii_letters + "+.-", max_size=8), path_text).map(
        "://".join
    ),
    kind=st.sampled_from([*STORE_KINDS, "model"]),
)
def test_x3_arbitrary_locations_open_a_store_or_are_refused_leaving_nothing(
    location: str, kind: str
) -> None:
    assume(_stays_inside(location))
    assume(not location.lower().startswith(("postgres://", "postgresql://")))
    open_checked(location, kind)


@FUZZ
@given(location=postgres_urls, kind=st.sampled_from(STORE_KINDS))
def test_x3_arbitrary_postgresql_urls_are_refused_with_a_storage_error(
    location: str, kind: str
) -> None:
    assume(not any(word in location.lower() for word in ("host", "port", "service", "pass")))
    open_checked(location, kind)


# -- found by the properties above ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("a\x00b.db", "holds a control character"),
        ("sqlite:///a\nb.db", "holds a control character"),
        ("  ", "is blank"),
        (".", "is a folder; an SQLite store is a file: name one inside it, such as treadle.db"),
        ("adir", "is a folder"),
        ("afile/store.db", "afile/store.db: cannot hold a store (Not a directory)"),
        ("n" * 300, "cannot hold a store (File name too long)"),
        ("d/" * 3000 + "s.db", "cannot hold a store (File name too long)"),
    ],
)
def test_x3_a_sqlite_location_no_file_can_have_is_a_storage_error_leaving_nothing(
    location: str, expected: str
) -> None:
    """They raised ValueError (NUL), NotADirectoryError, OSError (name too long) or said
    "disk I/O error" (a folder); a blank name or a newline made a file of that name."""
    with inside_fresh_folder() as folder:
        before = _tree(folder)
        with pytest.raises(TreadleError, match=re.escape(expected)):
            open_store(location, "models", MANAGER)
        assert _tree(folder) == before
