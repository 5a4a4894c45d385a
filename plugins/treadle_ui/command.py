"""``treadle ui``: the command. Light on purpose: Starlette, uvicorn and Jinja2 are imported
only when it runs, so ``treadle --help`` and plugin discovery never pay for them."""

from __future__ import annotations

import argparse
import os
import sys

from treadle.errors import ConfigError, PluginLoadError
from treadle_ui.settings import (
    TOKEN_ENVIRONMENT_VARIABLE,
    StoreLocations,
    UiSettings,
    check_bind,
    require_existing,
)

__all__ = ["UiCommand", "settings_from_arguments"]

_DEFAULT_LOCATION = "treadle.db"


def settings_from_arguments(args: argparse.Namespace) -> UiSettings:
    """The server's settings from parsed arguments; the access token falls back to
    ``$TREADLE_UI_TOKEN``.

    :raises ConfigError: a bind beyond loopback without a token, a short token, or a value out
        of range (a port past 65535, a page size of 0).
    """
    token = args.access_token or os.environ.get(TOKEN_ENVIRONMENT_VARIABLE) or None
    check_bind(args.host, token)
    locations = StoreLocations(
        experiments=args.experiment_location or args.location,
        models=args.registry_location or args.location,
        jobs=args.jobs_location or args.location,
    )
    try:
        return UiSettings(
            locations=locations,
            host=args.host,
            port=args.port,
            allow_actions=args.allow_actions,
            access_token=token,
            poll_seconds=args.poll_seconds,
            page_size=args.page_size,
            max_points=args.max_points,
        )
    except ValueError as err:  # attrs validators: "'page_size' must be >= 1: 0"
        msg = f"{err} (see treadle ui --help)"
        raise ConfigError(msg) from err


class UiCommand:
    """``treadle ui``."""

    help = "browse runs, models and jobs in a local web page (read-only unless --allow-actions)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--location",
            default=_DEFAULT_LOCATION,
            help="the store of runs, models and jobs: a path, sqlite:///path or "
            "postgresql://... (default: %(default)s)",
        )
        parser.add_argument(
            "--experiment-location", help="the experiment store, when not --location"
        )
        parser.add_argument("--registry-location", help="the model registry, when not --location")
        parser.add_argument("--jobs-location", help="the job store, when not --location")
        parser.add_argument(
            "--host",
            default="127.0.0.1",
            help="address to listen on (default: %(default)s); beyond loopback only with an "
            "access token",
        )
        parser.add_argument(
            "--port", type=int, default=8765, help="(default: %(default)s; 0 picks a free one)"
        )
        parser.add_argument(
            "--allow-actions",
            action="store_true",
            help="offer promoting model versions, cancelling jobs and triggering schedules",
        )
        parser.add_argument(
            "--access-token",
            help=f"a secret every request must carry (default: ${TOKEN_ENVIRONMENT_VARIABLE}); "
            "prefer the environment variable, which other users cannot read in ps",
        )
        parser.add_argument(
            "--poll-seconds",
            type=float,
            default=1.0,
            help="how often a running run's page asks for new points (default: %(default)s)",
        )
        parser.add_argument(
            "--page-size", type=int, default=50, help="table rows per page (default: %(default)s)"
        )
        parser.add_argument(
            "--max-points",
            type=int,
            default=2000,
            help="most points per curve; longer ones are downsampled (default: %(default)s)",
        )

    def run(self, args: argparse.Namespace) -> int:
        settings = settings_from_arguments(args)
        for location, what in (
            (settings.locations.experiments, "experiment store"),
            (settings.locations.models, "model registry"),
            (settings.locations.jobs, "job store"),
        ):
            require_existing(location, what)
        try:
            from treadle_ui.server import serve
        except ImportError as err:
            msg = (
                f'treadle ui needs Starlette, uvicorn and Jinja2: pip install "treadle[ui]" ({err})'
            )
            raise PluginLoadError(msg) from err
        return serve(settings, plugin_manager=args.plugin_manager, out=sys.stdout)
