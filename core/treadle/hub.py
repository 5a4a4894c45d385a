"""Whether the Hugging Face Hub can be reached, answered within a bound.

``datasets`` and ``transformers`` retry a hub they cannot reach for many seconds; the data
sets and model plugins ask here first, so that an offline machine fails within a second with
a message naming the fix.
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlsplit

__all__ = ["HUB_PROBE_SECONDS", "hub_unreachable", "is_true", "offline_setting"]

#: How long the reachability check may take before the hub counts as unreachable.
HUB_PROBE_SECONDS = 0.8

_TRUE = ("1", "true", "yes", "on")
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def is_true(variable: str) -> bool:
    """Whether environment variable ``variable`` is set to 1, true, yes or on."""
    return os.environ.get(variable, "").strip().lower() in _TRUE


def offline_setting(variables: tuple[str, ...]) -> str | None:
    """The first of ``variables`` that is set true, as ``"NAME=value"`` for a message (the
    Hugging Face libraries' offline switches), or ``None``."""
    for name in variables:
        if is_true(name):
            return f"{name}={os.environ[name]}"
    return None


def hub_unreachable(timeout: float = HUB_PROBE_SECONDS) -> str | None:
    """``None`` when a TCP connection to the hub (``HF_ENDPOINT``, or the ``HTTPS_PROXY``
    when one is set) opens within ``timeout`` seconds, or when ``TREADLE_SKIP_HUB_CHECK=1``;
    otherwise ``"host:port (why)"``, for the caller's message."""
    if is_true("TREADLE_SKIP_HUB_CHECK"):
        return None
    proxy = next((os.environ[name] for name in _PROXY_VARIABLES if os.environ.get(name)), None)
    endpoint = proxy or os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    host = parts.hostname or "huggingface.co"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    outcome: list[BaseException | None] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(None)
        except OSError as err:
            outcome.append(err)

    # a thread bounds the whole check: name resolution ignores socket timeouts
    worker = threading.Thread(target=connect, name="treadle-hub-check", daemon=True)
    worker.start()
    worker.join(timeout)
    if outcome and outcome[0] is None:
        return None
    reason = (
        f"{type(outcome[0]).__name__}: {outcome[0]}" if outcome else f"no answer in {timeout} s"
    )
    return f"{host}:{port} ({reason})"
