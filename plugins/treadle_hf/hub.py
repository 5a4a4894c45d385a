"""Hub model names: found in the local cache, or refused at once when the process is offline.

``transformers`` retries a hub it cannot reach for many seconds; a run fails within a second
instead, naming the fix (as the data loader does for hub data sets).
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit

from treadle.errors import ConfigError

__all__ = ["HUB_PROBE_SECONDS", "check_hub_model"]

#: How long the reachability check may take before the hub counts as unreachable.
HUB_PROBE_SECONDS = 0.8

_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE = ("1", "true", "yes", "on")


def _offline() -> str | None:
    for name in _OFFLINE_VARIABLES:
        if os.environ.get(name, "").strip().lower() in _TRUE:
            return f"{name}={os.environ[name]}"
    return None


def _cached(name: str) -> bool:
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")).expanduser()
    hub_cache = Path(os.environ.get("HF_HUB_CACHE", home / "hub")).expanduser()
    return (hub_cache / ("models--" + name.replace("/", "--"))).is_dir()


def check_hub_model(name: str, timeout: float = HUB_PROBE_SECONDS) -> None:
    """Return when ``name`` can be loaded: it is in the local cache, or the hub answers.

    :raises ConfigError: offline (``HF_HUB_OFFLINE=1``) without a cached copy, or the hub
        not reachable within ``timeout`` seconds; the message gives the fixes.
    """
    if _cached(name):
        return
    fixes = (
        "build the architecture from its config instead (plugins.options.hf.model = an "
        "architecture such as 'gpt2', with hf.config giving its sizes), or point hf.model at a "
        "local folder written by save_pretrained"
    )
    offline = _offline()
    if offline:
        msg = (
            f"hf.model {name!r} is a Hugging Face Hub model and this process is offline "
            f"({offline}) with no cached copy: {fixes}; or unset {offline.split('=')[0]} on a "
            f"machine with network access to download it"
        )
        raise ConfigError(msg)
    if os.environ.get("TREADLE_SKIP_HUB_CHECK", "").strip().lower() in _TRUE:
        return
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
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
        return
    reason = (
        f"{type(outcome[0]).__name__}: {outcome[0]}" if outcome else f"no answer in {timeout} s"
    )
    msg = (
        f"hf.model {name!r} is a Hugging Face Hub model, and the hub ({host}:{port}) cannot be "
        f"reached: this machine looks offline ({reason}). {fixes[0].upper()}{fixes[1:]}; set "
        f"HF_HUB_OFFLINE=1 to use cached models only, or TREADLE_SKIP_HUB_CHECK=1 to skip this "
        f"check"
    )
    raise ConfigError(msg)
