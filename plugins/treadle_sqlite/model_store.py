"""The SQLite model registry store: versions unique per name, tags moved atomically.

A tag belongs to a model name: the primary key ``(name, tag)`` of ``model_tags`` lets one
version hold it at a time, and a promotion is one upsert, so a reader sees the old holder or
the new one, never none and never two.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from treadle.errors import UnknownNameError
from treadle.storage import (
    DuplicateModelError,
    ModelRegistryEntry,
    NewModel,
    RegistryError,
    json_list,
    model_entry_from_row,
    utc_now,
)
from treadle_sqlite.connection import Migration, open_database, transaction

__all__ = ["SQLiteModelStore"]

COMPONENT = "registry"

MIGRATIONS: Sequence[Migration] = (
    """
    CREATE TABLE models (
        model_id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        checkpoint_path TEXT NOT NULL,
        task_type TEXT NOT NULL,
        config_hash TEXT NOT NULL,
        training_run_id INTEGER,
        parent_model_id INTEGER REFERENCES models (model_id),
        created_at TEXT NOT NULL,
        metrics TEXT NOT NULL,
        export_formats TEXT NOT NULL,
        model_size_mb REAL NOT NULL,
        memory_req_gb REAL NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('active', 'retired', 'experimental')),
        job_key TEXT UNIQUE,
        data_profile TEXT,
        UNIQUE (name, version)
    );
    CREATE INDEX models_parent ON models (parent_model_id);
    CREATE TABLE model_tags (
        name TEXT NOT NULL,
        tag TEXT NOT NULL,
        model_id INTEGER NOT NULL REFERENCES models (model_id),
        assigned_at TEXT NOT NULL,
        PRIMARY KEY (name, tag)
    );
    CREATE INDEX model_tags_model ON model_tags (model_id)
    """,
)

_COLUMNS = (
    "m.model_id, m.name, m.version, m.checkpoint_path, m.task_type, m.config_hash,"
    " m.training_run_id, m.parent_model_id, m.created_at, m.metrics, m.export_formats,"
    " m.model_size_mb, m.memory_req_gb, m.status, m.job_key,"
    " m.data_profile IS NOT NULL AS has_data_profile,"
    " (SELECT json_group_array(tag) FROM model_tags WHERE model_id = m.model_id) AS tags"
)


class SQLiteModelStore:
    """The model registry's entries in one SQLite file (shared with other treadle stores).

    :param location: a path or ``sqlite:///path``; created and migrated on open.
    :raises StorageError: the file is not a treadle store or holds a newer schema.
    """

    def __init__(self, location: str | Path) -> None:
        self.location = str(location)
        self._connection = open_database(location, COMPONENT, MIGRATIONS)
        # one connection per store: a lock keeps threads sharing the store out of each
        # other's transactions
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def __enter__(self) -> SQLiteModelStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _unknown(self, model_id: int) -> UnknownNameError:
        return UnknownNameError(f"No model with id {model_id} in {self.location}.")

    # -- writes --------------------------------------------------------------------------

    def add_model(self, model: NewModel) -> tuple[int, bool]:
        with self._lock, transaction(self._connection) as db:
            if model.job_key is not None:
                row = db.execute(
                    "SELECT model_id FROM models WHERE job_key = ?", (model.job_key,)
                ).fetchone()
                if row is not None:
                    return int(row[0]), False
            taken = db.execute(
                "SELECT model_id, created_at FROM models WHERE name = ? AND version = ?",
                (model.name, model.version),
            ).fetchone()
            if taken is not None:
                msg = (
                    f"Model {model.name!r} version {model.version!r} is registered already "
                    f"(model_id {taken[0]}, {taken[1]}) in {self.location}; register a new "
                    f"version. The existing entry is unchanged."
                )
                raise DuplicateModelError(msg)
            if model.parent_model_id is not None:
                parent = db.execute(
                    "SELECT 1 FROM models WHERE model_id = ?", (model.parent_model_id,)
                ).fetchone()
                if parent is None:
                    msg = (
                        f"parent_model_id {model.parent_model_id} names no model in "
                        f"{self.location}; register the parent first or pass None."
                    )
                    raise UnknownNameError(msg)
            row = db.execute(
                "INSERT INTO models (name, version, checkpoint_path, task_type, config_hash,"
                " training_run_id, parent_model_id, created_at, metrics, export_formats,"
                " model_size_mb, memory_req_gb, status, job_key, data_profile)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING model_id",
                (
                    model.name,
                    model.version,
                    model.checkpoint_path,
                    model.task_type,
                    model.config_hash,
                    model.training_run_id,
                    model.parent_model_id,
                    model.created_at,
                    json.dumps(model.metrics, allow_nan=False),
                    json.dumps(list(model.export_formats)),
                    model.model_size_mb,
                    model.memory_req_gb,
                    model.status,
                    model.job_key,
                    None
                    if model.data_profile is None
                    else json.dumps(model.data_profile, allow_nan=False),
                ),
            ).fetchone()
            model_id = int(row[0])
            for tag in dict.fromkeys(model.tags):
                self._upsert_tag(db, model.name, tag, model_id)
        return model_id, True

    @staticmethod
    def _upsert_tag(db: sqlite3.Connection, name: str, tag: str, model_id: int) -> None:
        db.execute(
            "INSERT INTO model_tags (name, tag, model_id, assigned_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (name, tag) DO UPDATE SET model_id = excluded.model_id,"
            " assigned_at = excluded.assigned_at",
            (name, tag, model_id, utc_now()),
        )

    def set_tag(self, model_id: int, tag: str) -> int | None:
        with self._lock, transaction(self._connection) as db:
            row = db.execute(
                "SELECT name, version, status FROM models WHERE model_id = ?", (model_id,)
            ).fetchone()
            if row is None:
                raise self._unknown(model_id)
            if row["status"] == "retired":
                msg = (
                    f"Model {model_id} ({row['name']} {row['version']}) is retired and cannot "
                    f"take the tag {tag!r}; promote an active version, or set this one "
                    f"active again first."
                )
                raise RegistryError(msg)
            previous = db.execute(
                "SELECT model_id FROM model_tags WHERE name = ? AND tag = ?", (row["name"], tag)
            ).fetchone()
            self._upsert_tag(db, row["name"], tag, model_id)
        return None if previous is None else int(previous[0])

    def remove_tag(self, name: str, tag: str) -> int | None:
        with self._lock, transaction(self._connection) as db:
            row = db.execute(
                "DELETE FROM model_tags WHERE name = ? AND tag = ? RETURNING model_id", (name, tag)
            ).fetchone()
        return None if row is None else int(row[0])

    def set_status(self, model_id: int, status: str) -> list[str]:
        with self._lock, transaction(self._connection) as db:
            updated = db.execute(
                "UPDATE models SET status = ? WHERE model_id = ?", (status, model_id)
            ).rowcount
            if not updated:
                raise self._unknown(model_id)
            removed: list[str] = []
            if status == "retired":
                removed = [
                    row[0]
                    for row in db.execute(
                        "DELETE FROM model_tags WHERE model_id = ? RETURNING tag", (model_id,)
                    )
                ]
        return sorted(removed)

    def add_export_formats(self, model_id: int, formats: Sequence[str]) -> None:
        with self._lock, transaction(self._connection) as db:
            row = db.execute(
                "SELECT export_formats FROM models WHERE model_id = ?", (model_id,)
            ).fetchone()
            if row is None:
                raise self._unknown(model_id)
            known = list(json.loads(row[0]))
            merged = known + [name for name in dict.fromkeys(formats) if name not in known]
            db.execute(
                "UPDATE models SET export_formats = ? WHERE model_id = ?",
                (json.dumps(merged), model_id),
            )

    # -- reads ---------------------------------------------------------------------------

    def get_model(self, model_id: int) -> ModelRegistryEntry:
        with self._lock:
            row = self._connection.execute(
                f"SELECT {_COLUMNS} FROM models AS m WHERE m.model_id = ?", (model_id,)
            ).fetchone()
        if row is None:
            raise self._unknown(model_id)
        return model_entry_from_row(row, json_list(row["tags"]))

    def find_models(
        self,
        *,
        name: str | None = None,
        version: str | None = None,
        tag: str | None = None,
        status: str | None = None,
        model_ids: Sequence[int] | None = None,
        limit: int | None = None,
    ) -> list[ModelRegistryEntry]:
        clauses: list[str] = []
        parameters: list[Any] = []
        for column, value in (("m.name", name), ("m.version", version), ("m.status", status)):
            if value is not None:
                clauses.append(f"{column} = ?")
                parameters.append(value)
        if tag is not None:
            clauses.append("m.model_id IN (SELECT model_id FROM model_tags WHERE tag = ?)")
            parameters.append(tag)
        if model_ids is not None:
            clauses.append("m.model_id IN (SELECT value FROM json_each(?))")
            parameters.append(json.dumps([int(model_id) for model_id in model_ids]))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        limit_clause = ""
        if limit is not None:
            limit_clause = "LIMIT ?"
            parameters.append(int(limit))
        with self._lock:
            rows = self._connection.execute(
                f"SELECT {_COLUMNS} FROM models AS m {where}"
                f" ORDER BY m.model_id DESC {limit_clause}",
                parameters,
            ).fetchall()
        return [model_entry_from_row(row, json_list(row["tags"])) for row in rows]

    def get_data_profile(self, model_id: int) -> dict[str, Any] | None:
        with self._lock:
            row = self._connection.execute(
                "SELECT data_profile FROM models WHERE model_id = ?", (model_id,)
            ).fetchone()
        if row is None:
            raise self._unknown(model_id)
        if row[0] is None:
            return None
        profile: dict[str, Any] = json.loads(row[0])
        return profile

    def ancestors(self, model_id: int) -> list[ModelRegistryEntry]:
        self.get_model(model_id)
        with self._lock:
            rows = self._connection.execute(
                "WITH RECURSIVE chain (model_id, depth) AS ("
                "  SELECT parent_model_id, 1 FROM models WHERE model_id = ?"
                "  UNION ALL"
                "  SELECT m.parent_model_id, chain.depth + 1 FROM models AS m"
                "  JOIN chain ON m.model_id = chain.model_id"
                "  WHERE m.parent_model_id IS NOT NULL"
                f") SELECT {_COLUMNS} FROM chain JOIN models AS m USING (model_id)"
                " ORDER BY chain.depth",
                (model_id,),
            ).fetchall()
        return [model_entry_from_row(row, json_list(row["tags"])) for row in rows]

    def descendants(self, model_id: int) -> list[ModelRegistryEntry]:
        self.get_model(model_id)
        with self._lock:
            rows = self._connection.execute(
                "WITH RECURSIVE tree (model_id) AS ("
                "  SELECT model_id FROM models WHERE parent_model_id = ?"
                "  UNION"
                "  SELECT m.model_id FROM models AS m"
                "  JOIN tree ON m.parent_model_id = tree.model_id"
                f") SELECT {_COLUMNS} FROM tree JOIN models AS m USING (model_id)"
                " ORDER BY m.model_id",
                (model_id,),
            ).fetchall()
        return [model_entry_from_row(row, json_list(row["tags"])) for row in rows]
