"""Hub model names: found in the local cache, or refused at once when the process is offline.

``transformers`` retries a hub it cannot reach for many seconds; a run fails within a second
instead, naming the fix (as the data loader does for hub data sets).
"""

from __future__ import annotations

import os
from pathlib import Path

from treadle.errors import ConfigError
from treadle.hub import HUB_PROBE_SECONDS, hub_unreachable, offline_setting

__all__ = ["HUB_PROBE_SECONDS", "check_hub_model"]

_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def _offline() -> str | None:
    return offline_setting(_OFFLINE_VARIABLES)


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
    unreachable = hub_unreachable(timeout)
    if unreachable is None:
        return
    msg = (
        f"hf.model {name!r} is a Hugging Face Hub model, and the hub {unreachable} cannot be "
        f"reached: this machine looks offline. {fixes[0].upper()}{fixes[1:]}; set "
        f"HF_HUB_OFFLINE=1 to use cached models only, or TREADLE_SKIP_HUB_CHECK=1 to skip this "
        f"check"
    )
    raise ConfigError(msg)
