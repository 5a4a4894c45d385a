"""The model registry's store in SQL: versions unique per name, tags moved atomically.

A tag belongs to a model name: the primary key ``(name, tag)`` of ``model_tags`` lets one
version hold it at a time, and a promotion is one upsert, so a reader sees the old holder or
the new one, never none and never two. Where transactions do not serialize writers (row
locks instead of SQLite's ``BEGIN IMMEDIATE``), promotions of one ``(name, tag)`` take the
dialect's advisory lock for their transaction, so each returns the holder it really replaced.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from treadle.errors import UnknownNameError
from treadle.sql.database import ConstraintViolation, Database, Session, SQLStore
from treadle.storage import (
    DuplicateModelError,
    ModelRegistryEntry,
    NewModel,
    RegistryError,
    json_list,
    model_entry_from_row,
    utc_now,
)

__all__ = ["COMPONENT", "SQLModelStore"]

#: The schema component the registry's tables are versioned under.
COMPONENT = "registry"

#: How often a registration that lost a race on a unique key is tried again (it then finds
#: the winner's row and answers as if it had come second).
_RACE_RETRIES = 3


class SQLModelStore(SQLStore):
    """The model registry's entries in an SQL database (shared with other treadle stores and
    with every process that opens it): the :class:`~treadle.storage.ModelStore` protocol.

    :param database: the store's open, migrated database.
    """

    def __init__(self, database: Database) -> None:
        super().__init__(database)
        dialect = database.dialect
        self._dialect = dialect
        self._columns = (
            "m.model_id, m.name, m.version, m.checkpoint_path, m.task_type, m.config_hash,"
            " m.training_run_id, m.parent_model_id, m.created_at, m.metrics, m.export_formats,"
            " m.model_size_mb, m.memory_req_gb, m.status, m.job_key,"
            " m.data_profile IS NOT NULL AS has_data_profile,"
            f" (SELECT {dialect.aggregate_json('t.tag')} FROM model_tags AS t"
            "  WHERE t.model_id = m.model_id) AS tags"
        )
        self._upsert_tag_sql = dialect.upsert(
            "model_tags",
            ("name", "tag", "model_id", "assigned_at"),
            ("name", "tag"),
            ("model_id", "assigned_at"),
        )

    def _unknown(self, model_id: int) -> UnknownNameError:
        return UnknownNameError(f"No model with id {model_id} in {self.database.shown}.")

    @staticmethod
    def _entry(row: Any) -> ModelRegistryEntry:
        return model_entry_from_row(row, json_list(row["tags"]))

    # -- writes --------------------------------------------------------------------------

    def add_model(self, model: NewModel) -> tuple[int, bool]:
        for attempt in range(_RACE_RETRIES):
            try:
                return self._add_model(model)
            except ConstraintViolation:
                # another process registered this job key or version between our check and
                # our insert: the next pass finds its row and answers from it
                if attempt == _RACE_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _add_model(self, model: NewModel) -> tuple[int, bool]:
        shown = self.database.shown
        with self.database.transaction() as db:
            if model.job_key is not None:
                row = db.one("SELECT model_id FROM models WHERE job_key = ?", (model.job_key,))
                if row is not None:
                    return int(row["model_id"]), False
            taken = db.one(
                "SELECT model_id, created_at FROM models WHERE name = ? AND version = ?",
                (model.name, model.version),
            )
            if taken is not None:
                msg = (
                    f"Model {model.name!r} version {model.version!r} is registered already "
                    f"(model_id {taken['model_id']}, {taken['created_at']}) in {shown}; "
                    f"register a new version. The existing entry is unchanged."
                )
                raise DuplicateModelError(msg)
            if model.parent_model_id is not None:
                # KEY SHARE: the parent cannot be deleted under us, and no lock is taken
                # against its tag or status changes
                parent = db.one(
                    f"SELECT 1 AS found FROM models WHERE model_id = ?"
                    f"{self._dialect.lock('KEY SHARE')}",
                    (model.parent_model_id,),
                )
                if parent is None:
                    msg = (
                        f"parent_model_id {model.parent_model_id} names no model in "
                        f"{shown}; register the parent first or pass None."
                    )
                    raise UnknownNameError(msg)
            row = db.one(
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
            )
            model_id = int(row["model_id"])
            for tag in dict.fromkeys(model.tags):
                self._lock_tag(db, model.name, tag)
                self._upsert_tag(db, model.name, tag, model_id)
        return model_id, True

    def _upsert_tag(self, db: Session, name: str, tag: str, model_id: int) -> None:
        db.execute(self._upsert_tag_sql, (name, tag, model_id, utc_now()))

    def _lock_tag(self, db: Session, name: str, tag: str) -> None:
        if self._dialect.advisory_lock is not None:
            db.execute(self._dialect.advisory_lock, (json.dumps([name, tag]),))

    def set_tag(self, model_id: int, tag: str) -> int | None:
        with self.database.transaction() as db:
            # SHARE: a retirement waits for this promotion (and the other way round)
            row = db.one(
                f"SELECT name, version, status FROM models WHERE model_id = ?"
                f"{self._dialect.lock('SHARE')}",
                (model_id,),
            )
            if row is None:
                raise self._unknown(model_id)
            if row["status"] == "retired":
                msg = (
                    f"Model {model_id} ({row['name']} {row['version']}) is retired and cannot "
                    f"take the tag {tag!r}; promote an active version, or set this one "
                    f"active again first."
                )
                raise RegistryError(msg)
            self._lock_tag(db, row["name"], tag)
            previous = db.one(
                "SELECT model_id FROM model_tags WHERE name = ? AND tag = ?", (row["name"], tag)
            )
            self._upsert_tag(db, row["name"], tag, model_id)
        return None if previous is None else int(previous["model_id"])

    def remove_tag(self, name: str, tag: str) -> int | None:
        with self.database.transaction() as db:
            self._lock_tag(db, name, tag)
            row = db.one(
                "DELETE FROM model_tags WHERE name = ? AND tag = ? RETURNING model_id",
                (name, tag),
            )
        return None if row is None else int(row["model_id"])

    def set_status(self, model_id: int, status: str) -> list[str]:
        with self.database.transaction() as db:
            updated = db.execute(
                "UPDATE models SET status = ? WHERE model_id = ?", (status, model_id)
            ).rowcount
            if not updated:
                raise self._unknown(model_id)
            removed: list[str] = []
            if status == "retired":
                removed = [
                    row["tag"]
                    for row in db.all(
                        "DELETE FROM model_tags WHERE model_id = ? RETURNING tag", (model_id,)
                    )
                ]
        return sorted(removed)

    def add_export_formats(self, model_id: int, formats: Sequence[str]) -> None:
        with self.database.transaction() as db:
            row = db.one(
                f"SELECT export_formats FROM models WHERE model_id = ?"
                f"{self._dialect.lock('UPDATE')}",
                (model_id,),
            )
            if row is None:
                raise self._unknown(model_id)
            known = list(json.loads(row["export_formats"]))
            merged = known + [name for name in dict.fromkeys(formats) if name not in known]
            db.execute(
                "UPDATE models SET export_formats = ? WHERE model_id = ?",
                (json.dumps(merged), model_id),
            )

    # -- reads ---------------------------------------------------------------------------

    def get_model(self, model_id: int) -> ModelRegistryEntry:
        with self.database.session() as db:
            row = db.one(
                f"SELECT {self._columns} FROM models AS m WHERE m.model_id = ?", (model_id,)
            )
        if row is None:
            raise self._unknown(model_id)
        return self._entry(row)

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
            clause, ids = self._dialect.member("m.model_id", [int(i) for i in model_ids])
            clauses.append(clause)
            parameters.append(ids)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        limit_clause = ""
        if limit is not None:
            limit_clause = "LIMIT ?"
            parameters.append(int(limit))
        with self.database.session() as db:
            rows = db.all(
                f"SELECT {self._columns} FROM models AS m {where}"
                f" ORDER BY m.model_id DESC {limit_clause}",
                parameters,
            )
        return [self._entry(row) for row in rows]

    def get_data_profile(self, model_id: int) -> dict[str, Any] | None:
        with self.database.session() as db:
            row = db.one("SELECT data_profile FROM models WHERE model_id = ?", (model_id,))
        if row is None:
            raise self._unknown(model_id)
        if row["data_profile"] is None:
            return None
        profile: dict[str, Any] = json.loads(row["data_profile"])
        return profile

    def ancestors(self, model_id: int) -> list[ModelRegistryEntry]:
        self.get_model(model_id)
        with self.database.session() as db:
            rows = db.all(
                "WITH RECURSIVE chain (model_id, depth) AS ("
                "  SELECT parent_model_id, 1 FROM models WHERE model_id = ?"
                "  UNION ALL"
                "  SELECT m.parent_model_id, chain.depth + 1 FROM models AS m"
                "  JOIN chain ON m.model_id = chain.model_id"
                "  WHERE m.parent_model_id IS NOT NULL"
                f") SELECT {self._columns} FROM chain JOIN models AS m USING (model_id)"
                " ORDER BY chain.depth",
                (model_id,),
            )
        return [self._entry(row) for row in rows]

    def descendants(self, model_id: int) -> list[ModelRegistryEntry]:
        self.get_model(model_id)
        with self.database.session() as db:
            rows = db.all(
                "WITH RECURSIVE tree (model_id) AS ("
                "  SELECT model_id FROM models WHERE parent_model_id = ?"
                "  UNION"
                "  SELECT m.model_id FROM models AS m"
                "  JOIN tree ON m.parent_model_id = tree.model_id"
                f") SELECT {self._columns} FROM tree JOIN models AS m USING (model_id)"
                " ORDER BY m.model_id",
                (model_id,),
            )
        return [self._entry(row) for row in rows]
