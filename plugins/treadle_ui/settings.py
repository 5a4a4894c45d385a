"""What ``treadle ui`` serves and how: store locations, address, actions and access token.

Checked here, before any server starts: a bind beyond loopback needs an access token, and a
token must be long enough to resist guessing.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path

import attrs

from treadle.errors import ConfigError, StorageError

__all__ = [
    "MIN_TOKEN_LENGTH",
    "TOKEN_ENVIRONMENT_VARIABLE",
    "StoreLocations",
    "UiSettings",
    "check_bind",
    "display_location",
    "is_loopback",
    "require_existing",
]

#: Where ``treadle ui`` reads its access token when ``--access-token`` is not given.
TOKEN_ENVIRONMENT_VARIABLE = "TREADLE_UI_TOKEN"
#: The shortest access token accepted: 16 characters, 96 bits of ``secrets.token_urlsafe``.
MIN_TOKEN_LENGTH = 16

_LOOPBACK_NAMES = ("localhost",)
_URL_PASSWORD = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@?#]*):[^@/?#]*@")
_QUERY_SECRET = re.compile(r"(?P<key>(?:password|passwd|pwd|secret|token)=)[^&#]*", re.IGNORECASE)


@attrs.frozen(kw_only=True)
class StoreLocations:
    """The three stores a page reads; usually one file or database for all three."""

    experiments: str
    models: str
    jobs: str

    @classmethod
    def shared(cls, location: str) -> StoreLocations:
        return cls(experiments=location, models=location, jobs=location)


@attrs.frozen(kw_only=True)
class UiSettings:
    """How the server runs.

    :ivar allow_actions: whether the pages offer (and the server accepts) promoting a model
        version, cancelling a job and triggering a schedule.
    :ivar access_token: when set, every request must carry it (cookie, ``?token=`` or
        ``Authorization: Bearer``); required for a bind beyond loopback.
    :ivar poll_seconds: how often a page polls a running run for new points.
    :ivar page_size: rows per page of the runs and jobs tables.
    :ivar max_points: the most points a curve gets; longer series are downsampled on the
        server, keeping each bucket's lowest and highest value.
    """

    locations: StoreLocations
    host: str = "127.0.0.1"
    port: int = attrs.field(
        default=8765, validator=[attrs.validators.ge(0), attrs.validators.le(65535)]
    )
    allow_actions: bool = False
    access_token: str | None = None
    poll_seconds: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    page_size: int = attrs.field(default=50, validator=[attrs.validators.ge(1)])
    max_points: int = attrs.field(default=2000, validator=attrs.validators.ge(10))


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback address (127.0.0.0/8, ::1).

    A host name is resolved; one that does not resolve is not loopback.
    """
    name = host.strip().strip("[]")
    if name.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None)
    except OSError:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(
        ipaddress.ip_address(str(address).split("%")[0]).is_loopback for address in addresses
    )


def check_bind(host: str, access_token: str | None) -> None:
    """Refuse to listen beyond loopback without an access token, and refuse short tokens.

    :raises ConfigError: naming the host and the fix.
    """
    if access_token is not None and len(access_token) < MIN_TOKEN_LENGTH:
        msg = (
            f"The access token is {len(access_token)} characters long; use at least "
            f"{MIN_TOKEN_LENGTH}, e.g. "
            f'{TOKEN_ENVIRONMENT_VARIABLE}=$(python -c "import secrets; '
            f'print(secrets.token_urlsafe(24))")'
        )
        raise ConfigError(msg)
    if access_token is None and not is_loopback(host):
        msg = (
            f"treadle ui will not listen on {host!r} without an access token: anyone who can "
            f"reach that address could read every run, model and job. Leave --host out "
            f"(127.0.0.1), or set {TOKEN_ENVIRONMENT_VARIABLE} (or --access-token) to a secret "
            f"of at least {MIN_TOKEN_LENGTH} characters."
        )
        raise ConfigError(msg)


def require_existing(location: str, what: str) -> None:
    """Refuse a plain path that does not exist: a viewer must not create an empty store at
    a mistyped location. URLs are left to their backend.

    :raises StorageError: naming the location.
    """
    if "://" in location:
        return
    if not Path(location).exists():
        msg = (
            f"No {what} at {location}: nothing has been recorded there. Pass --location "
            f"with the file training wrote to (experiment_location / registry_location)."
        )
        raise StorageError(msg)


def display_location(location: str) -> str:
    """``location`` fit to show: a URL's password and secret query values masked."""
    text = _URL_PASSWORD.sub(lambda match: f"{match.group('head')}:***@", location)
    return _QUERY_SECRET.sub(lambda match: f"{match.group('key')}***", text)
