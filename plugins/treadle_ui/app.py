"""The web application: routes, page rendering and the three actions.

Pages are rendered on the server with Jinja2 (autoescaping everything: a run named
``<script>`` is text). Curves come from JSON endpoints that a page polls while a run is live;
the charts are uPlot, served from this package. Store calls run on Starlette's thread pool,
one page at a time (see :class:`~treadle_ui.stores.StoreReader`).
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from treadle.errors import JobError, TreadleError, UnknownNameError
from treadle.storage import RegistryError, check_name
from treadle_ui import formatting
from treadle_ui.jobs_view import jobs_page, retraining_decisions, schedule_rows
from treadle_ui.models_view import model_families, model_page
from treadle_ui.run_detail import (
    drift_points,
    flatten_config,
    read_checkpoints,
    replay_alerts,
    run_folder,
)
from treadle_ui.runs_view import (
    LIVE_STATUSES,
    RunNameIndex,
    SeriesCache,
    compare_payload,
    list_runs,
    run_payload,
    summarize_runs,
)
from treadle_ui.security import AccessGuard, CsrfProtection
from treadle_ui.settings import UiSettings
from treadle_ui.stores import StoreReader

__all__ = ["UI_STATIC", "UiApp", "create_app"]

PACKAGE = Path(__file__).resolve().parent
UI_STATIC = PACKAGE / "static"
#: the vendored uPlot files, named with their version
UPLOT_SCRIPT = "uPlot-1.6.32.iife.min.js"
UPLOT_STYLE = "uPlot-1.6.32.min.css"
#: runs one compare page overlays
MAX_COMPARED = 12
#: notices kept for the page an action redirects to
_NOTICES = 64
#: the largest action form accepted
_MAX_FORM_BYTES = 16 * 1024


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(PACKAGE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        number=formatting.format_number,
        epoch=formatting.format_epoch,
        bytes=formatting.format_bytes,
        duration=formatting.format_duration,
        time=formatting.format_time,
        iso=formatting.iso_time,
        ago=formatting.ago,
        tone=formatting.status_tone,
        pretty_json=formatting.pretty_json,
        first_line=formatting.first_line,
    )
    return environment


def _int_parameter(request: Request, name: str, default: int) -> int:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise HTTPException(400, f"{name} must be a whole number: {value!r}") from None


def _text_parameter(request: Request, name: str) -> str | None:
    value = request.query_params.get(name, "").strip()
    return value or None


class UiApp:
    """The pages and their state: stores, caches, secrets. :attr:`app` is the ASGI app."""

    def __init__(self, settings: UiSettings, reader: StoreReader) -> None:
        self.settings = settings
        self.reader = reader
        self.environment = _environment()
        self.secret = secrets.token_bytes(32)
        self.csrf = CsrfProtection(self.secret)
        self.names = RunNameIndex()
        self.series_cache = SeriesCache()
        self._notices: OrderedDict[str, str] = OrderedDict()
        self._notices_lock = threading.Lock()
        routes = [
            Route("/", self.home),
            Route("/runs", self.runs),
            Route("/runs/{run_id:int}", self.run),
            Route("/compare", self.compare),
            Route("/models", self.models),
            Route("/models/{model_id:int}", self.model),
            Route("/models/{model_id:int}/promote", self.promote, methods=["POST"]),
            Route("/jobs", self.jobs),
            Route("/jobs/{job_id:int}", self.job),
            Route("/jobs/{job_id:int}/cancel", self.cancel, methods=["POST"]),
            Route("/schedules/{schedule_id:int}/trigger", self.trigger, methods=["POST"]),
            Route("/api/runs/{run_id:int}/series", self.run_series),
            Route("/api/compare/series", self.compare_series),
            Mount("/static", StaticFiles(directory=UI_STATIC), name="static"),
        ]
        starlette = Starlette(
            routes=routes,
            exception_handlers={
                HTTPException: self._http_error,
                UnknownNameError: self._not_found,
                TreadleError: self._bad_request,
            },
        )
        self.app = AccessGuard(
            starlette,
            access_token=settings.access_token,
            check_host=settings.access_token is None,
            secret=self.secret,
        )

    # -- rendering -------------------------------------------------------------------------

    def render(
        self, request: Request, template: str, *, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        session, is_new = self.csrf.session(request.scope)
        notice = None
        notice_id = request.query_params.get("notice")
        if notice_id:
            with self._notices_lock:
                notice = self._notices.get(notice_id)
        html = self.environment.get_template(template).render(
            request_path=request.url.path,
            section=request.url.path.strip("/").split("/")[0] or "runs",
            locations=self.reader.shown_locations,
            allow_actions=self.settings.allow_actions,
            csrf_field=CsrfProtection.FIELD,
            csrf_token=self.csrf.token(session) if self.settings.allow_actions else "",
            notice=notice,
            uplot_script=UPLOT_SCRIPT,
            uplot_style=UPLOT_STYLE,
            now=datetime.now(UTC),
            **context,
        )
        response = HTMLResponse(html, status_code=status_code)
        response.headers["cache-control"] = "no-store"
        if self.settings.allow_actions and is_new:
            response.headers.append(
                "set-cookie", self.csrf.set_cookie_header(request.scope, session)
            )
        return response

    def _error_page(self, request: Request, status: int, title: str, message: str) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message}, status_code=status)
        return self.render(request, "error.html", status_code=status, title=title, message=message)

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        title = {404: "Not found", 403: "Refused", 405: "Not allowed"}.get(exc.status_code, "Error")
        return self._error_page(request, exc.status_code, title, str(exc.detail))

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        message = str(exc.args[0]) if exc.args else str(exc)
        return self._error_page(request, 404, "Not found", message)

    async def _bad_request(self, request: Request, exc: Exception) -> Response:
        return self._error_page(request, 400, "Cannot do that", str(exc))

    def _read(self, build: Callable[[StoreReader], dict[str, Any]]) -> dict[str, Any]:
        with self.reader.reading() as reader:
            return build(reader)

    # -- pages -----------------------------------------------------------------------------

    def home(self, request: Request) -> Response:
        return RedirectResponse("/runs", status_code=307)

    def runs(self, request: Request) -> Response:
        status = _text_parameter(request, "status")
        name = _text_parameter(request, "name")
        page = _int_parameter(request, "page", 1)

        def build(reader: StoreReader) -> dict[str, Any]:
            listing = list_runs(
                reader.experiments,
                self.names,
                status=status,
                name=name,
                page=page,
                page_size=self.settings.page_size,
                now=datetime.now(UTC),
            )
            return {"listing": listing}

        context = self._read(build)
        filters = {"status": status or "", "name": name or ""}
        return self.render(
            request,
            "runs.html",
            filters=filters,
            page_link=lambda number: "/runs?" + urlencode({**_present(filters), "page": number}),
            **context,
        )

    def run(self, request: Request) -> Response:
        run_id: int = request.path_params["run_id"]

        def build(reader: StoreReader) -> dict[str, Any]:
            db = reader.experiments
            run = db.get_run(run_id)
            names = db.store.metric_names([run_id])
            epoch_names = [
                name
                for name in names
                if "/" not in name
                and (
                    name in ("train_loss", "learning_rate", "gradient_norm", "epoch_duration")
                    or name.startswith(("val_", "drift"))
                )
            ]
            epoch_rows = db.metric_rows([run_id], names=epoch_names) if epoch_names else []
            (row,) = summarize_runs(db, [run], datetime.now(UTC))
            drift, warning, critical = drift_points(epoch_rows)
            models = reader.registry.store.find_models()
            trained = [entry for entry in models if entry.training_run_id == run_id]
            return {
                "run": run,
                "row": row,
                "metric_names": names,
                "history": _history(epoch_rows),
                "config_rows": flatten_config(run.config),
                "checkpoints": read_checkpoints(run_folder(run)),
                "drift": drift,
                "drift_thresholds": (warning, critical),
                "alerts": replay_alerts(epoch_rows, run.config),
                "models": trained,
            }

        context = self._read(build)
        run = context["run"]
        return self.render(
            request,
            "run.html",
            series_url=f"/api/runs/{run.run_id}/series",
            poll_ms=int(self.settings.poll_seconds * 1000),
            is_live=run.status in LIVE_STATUSES,
            **context,
        )

    def _compared_ids(self, request: Request) -> list[int]:
        ids: list[int] = []
        for value in request.query_params.getlist("run"):
            for part in value.split(","):
                if part.strip():
                    try:
                        ids.append(int(part))
                    except ValueError:
                        raise HTTPException(400, f"run ids are whole numbers: {part!r}") from None
        unique = list(dict.fromkeys(ids))
        if len(unique) > MAX_COMPARED:
            raise HTTPException(400, f"Compare at most {MAX_COMPARED} runs at once.")
        return unique

    def compare(self, request: Request) -> Response:
        ids = self._compared_ids(request)

        def build(reader: StoreReader) -> dict[str, Any]:
            db = reader.experiments
            found = {run.run_id: run for run in db.store.find_runs(run_ids=ids)} if ids else {}
            missing = [run_id for run_id in ids if run_id not in found]
            runs = [found[run_id] for run_id in ids if run_id in found]
            return {
                "rows": summarize_runs(db, runs, datetime.now(UTC)),
                "missing": missing,
                "differences": _config_differences(runs),
            }

        context = self._read(build)
        query = urlencode([("run", str(row.run.run_id)) for row in context["rows"]])
        return self.render(
            request,
            "compare.html",
            series_url=f"/api/compare/series?{query}",
            poll_ms=int(self.settings.poll_seconds * 1000),
            is_live=any(row.run.status in LIVE_STATUSES for row in context["rows"]),
            **context,
        )

    def models(self, request: Request) -> Response:
        name = _text_parameter(request, "name")
        context = self._read(
            lambda reader: {"families": model_families(reader.registry, name=name)}
        )
        return self.render(request, "models.html", name_filter=name or "", **context)

    def model(self, request: Request) -> Response:
        model_id: int = request.path_params["model_id"]

        def build(reader: StoreReader) -> dict[str, Any]:
            page = model_page(reader.registry, model_id)
            run = None
            if page.entry.training_run_id is not None:
                runs = reader.experiments.store.find_runs(run_ids=[page.entry.training_run_id])
                run = runs[0] if runs else None
            tags = sorted(
                {
                    tag
                    for entry in reader.registry.store.find_models(name=page.entry.name)
                    for tag in entry.tags
                }
                | {"production", "staging"}
            )
            return {"page": page, "run": run, "known_tags": tags}

        return self.render(request, "model.html", **self._read(build))

    def jobs(self, request: Request) -> Response:
        status = _text_parameter(request, "status")
        job_type = _text_parameter(request, "type")
        page = _int_parameter(request, "page", 1)

        def build(reader: StoreReader) -> dict[str, Any]:
            return {
                "listing": jobs_page(
                    reader.scheduler,
                    status=status,
                    job_type=job_type,
                    page=page,
                    page_size=self.settings.page_size,
                ),
                "schedules": schedule_rows(reader.scheduler),
                "decisions": retraining_decisions(reader.scheduler),
            }

        filters = {"status": status or "", "type": job_type or ""}
        return self.render(
            request,
            "jobs.html",
            filters=filters,
            page_link=lambda number: "/jobs?" + urlencode({**_present(filters), "page": number}),
            **self._read(build),
        )

    def job(self, request: Request) -> Response:
        job_id: int = request.path_params["job_id"]
        context = self._read(lambda reader: {"job": reader.jobs.get_job(job_id)})
        return self.render(request, "job.html", **context)

    # -- curves ----------------------------------------------------------------------------

    def _max_points(self, request: Request) -> int:
        wanted = _int_parameter(request, "max_points", self.settings.max_points)
        return max(10, min(wanted, self.settings.max_points))

    def run_series(self, request: Request) -> Response:
        run_id: int = request.path_params["run_id"]
        axis = request.query_params.get("axis", "step")
        max_points = self._max_points(request)

        with self.reader.curves() as db:
            run = db.get_run(run_id)
            payload = run_payload(
                db, run, axis=axis, max_points=max_points, cache=self.series_cache
            )
        return self._series_response(payload)

    def compare_series(self, request: Request) -> Response:
        ids = self._compared_ids(request)
        axis = request.query_params.get("axis", "step")
        max_points = self._max_points(request)

        with self.reader.curves() as db:
            found = {run.run_id: run for run in db.store.find_runs(run_ids=ids)} if ids else {}
            runs = [found[run_id] for run_id in ids if run_id in found]
            payload = compare_payload(db, runs, axis=axis, max_points=max_points)
        return self._series_response(payload)

    def _series_response(self, payload: dict[str, Any]) -> Response:
        body = {
            **payload,
            "poll_ms": int(self.settings.poll_seconds * 1000),
            "runs": [
                {**item, "tone": formatting.status_tone(item["status"])} for item in payload["runs"]
            ],
        }
        response = JSONResponse(body)
        response.headers["cache-control"] = "no-store"
        return response

    # -- actions ---------------------------------------------------------------------------

    async def _action_form(self, request: Request) -> dict[str, str]:
        if not self.settings.allow_actions:
            raise HTTPException(
                403,
                "Actions are off: this treadle ui is read-only. Restart it with "
                "--allow-actions to promote, cancel and trigger from the page.",
            )
        # the action forms are small and urlencoded: parsed here, without python-multipart
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type != "application/x-www-form-urlencoded":
            raise HTTPException(415, "Actions take the page's form (urlencoded) only.")
        body = await request.body()
        if len(body) > _MAX_FORM_BYTES:
            raise HTTPException(413, "The form is too large.")
        values = dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
        problem = self.csrf.problem(request.scope, values.get(CsrfProtection.FIELD))
        if problem is not None:
            raise HTTPException(403, problem)
        return values

    def _notice(self, text: str) -> str:
        key = secrets.token_urlsafe(8)
        with self._notices_lock:
            self._notices[key] = text
            while len(self._notices) > _NOTICES:
                self._notices.popitem(last=False)
        return key

    async def promote(self, request: Request) -> Response:
        form = await self._action_form(request)
        model_id: int = request.path_params["model_id"]
        tag = check_name(form.get("tag", "").strip() or " ", "tag", max_length=128)

        def act() -> str:
            with self.reader.reading() as reader:
                registry = reader.registry
                entry = registry.get_model(model_id=model_id)
                try:
                    registry.promote_model(model_id, tag)
                except RegistryError as err:
                    return f"Not promoted: {err}"
            return f"{entry.name} {entry.version} now holds {tag!r}."

        text = await run_in_threadpool(act)
        return RedirectResponse(f"/models/{model_id}?notice={self._notice(text)}", status_code=303)

    async def cancel(self, request: Request) -> Response:
        await self._action_form(request)
        job_id: int = request.path_params["job_id"]

        def act() -> str:
            with self.reader.reading() as reader:
                try:
                    job = reader.jobs.cancel_job(job_id)
                except JobError as err:
                    return f"Not cancelled: {err}"
            if job.status == "running":
                return f"Job {job_id}: cancel requested; its worker stops it within a heartbeat."
            return f"Job {job_id} is {job.status}."

        text = await run_in_threadpool(act)
        return RedirectResponse(f"/jobs/{job_id}?notice={self._notice(text)}", status_code=303)

    async def trigger(self, request: Request) -> Response:
        await self._action_form(request)
        schedule_id: int = request.path_params["schedule_id"]

        def act() -> tuple[str, int | None]:
            with self.reader.reading() as reader:
                schedule = reader.scheduler.get_schedule(schedule_id)
                job_id = reader.scheduler.trigger_schedule(schedule_id)
            return f"Schedule {schedule.name!r} triggered: job {job_id} queued.", job_id

        text, job_id = await run_in_threadpool(act)
        target = f"/jobs/{job_id}" if job_id is not None else "/jobs"
        return RedirectResponse(f"{target}?notice={self._notice(text)}", status_code=303)


def _present(filters: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in filters.items() if value}


def _history(rows: list[Any]) -> dict[str, Any]:
    """Epoch-level rows as a table: the epochs, the metric names, and values by both."""
    table: dict[int, dict[str, float]] = {}
    names: dict[str, None] = {}
    for row in rows:
        if row.epoch is None:
            continue
        table.setdefault(row.epoch, {})[row.name] = row.value
        names.setdefault(row.name, None)
    ordered = sorted(names, key=lambda name: (not name.endswith("loss"), name))
    return {"epochs": sorted(table), "names": ordered, "values": table}


def _config_differences(runs: list[Any]) -> list[tuple[str, list[str]]]:
    """Config keys whose values differ between ``runs``, with each run's value."""
    if len(runs) < 2:
        return []
    flattened = [dict(flatten_config(run.config)) for run in runs]
    keys = list(dict.fromkeys(key for config in flattened for key in config))
    return [
        (key, [config.get(key, "—") for config in flattened])
        for key in keys
        if len({config.get(key) for config in flattened}) > 1
    ]


def create_app(settings: UiSettings, reader: StoreReader) -> UiApp:
    """The application over ``reader``'s stores; ``.app`` is what uvicorn serves."""
    return UiApp(settings, reader)
