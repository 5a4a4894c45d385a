"""Serving: open the stores, bind the socket (so port 0 can be told), print the address, run
uvicorn until Ctrl-C."""

from __future__ import annotations

import contextlib
import socket
from typing import TYPE_CHECKING, TextIO

import uvicorn

from treadle.errors import ConfigError
from treadle_ui.app import create_app
from treadle_ui.settings import UiSettings
from treadle_ui.stores import StoreReader

if TYPE_CHECKING:
    from treadle.plugins import PluginManager

__all__ = ["address_of", "bind", "serve"]


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one).

    :raises ConfigError: the address is taken or cannot be bound, with the fix.
    """
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as err:
        sock.close()
        msg = f"cannot listen on {host}:{port} ({err.strerror}); choose another --port (0: any)"
        raise ConfigError(msg) from err
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def address_of(sock: socket.socket) -> str:
    """``http://127.0.0.1:8765/`` for a bound socket."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def serve(
    settings: UiSettings,
    *,
    plugin_manager: PluginManager | None,
    out: TextIO,
) -> int:
    """Serve until interrupted; returns the exit status."""
    reader = StoreReader(settings.locations, plugin_manager=plugin_manager)
    try:
        ui = create_app(settings, reader)
        sock = bind(settings.host, settings.port)
        address = address_of(sock)
        mode = "actions allowed" if settings.allow_actions else "read-only"
        where = ", ".join(f"{what} {location}" for what, location in reader.shown_locations)
        link = address if settings.access_token is None else f"{address}?token=<your token>"
        out.write(f"treadle ui: {where} at {link} ({mode}; Ctrl-C stops)\n")
        out.flush()
        config = uvicorn.Config(
            ui.app,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        # uvicorn shuts down on Ctrl-C, then raises the signal again: a normal stop
        with contextlib.suppress(KeyboardInterrupt):
            server.run(sockets=[sock])
        out.write("treadle ui: stopped\n")
    finally:
        reader.close()
    return 0
