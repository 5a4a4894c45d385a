"""Who may read and who may change: the access token, the Host check, the per-session CSRF
token for actions, and the headers every response carries.

- **Host**: served on loopback without a token, a request must name a loopback host
  (``127.0.0.1``, ``localhost``, ``[::1]``). A page of another site that rebinds its own
  name to 127.0.0.1 (DNS rebinding) is refused, so it can neither read nor act.
- **Access token** (required beyond loopback): every request carries it, as the cookie a
  first ``?token=`` visit sets (the address then drops the token), or as
  ``Authorization: Bearer``. The cookie holds a value derived from the token, never the token.
- **Actions** (only with ``--allow-actions``): a POST must come from this server's own page:
  same origin (``Origin`` and ``Sec-Fetch-Site``), with the session's CSRF token, an HMAC of
  the session cookie under a secret made at start. Cookies are ``HttpOnly`` and
  ``SameSite=Strict``, and named with the port, so two servers on one host never share one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "AccessGuard",
    "CsrfProtection",
    "cookie_name",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Scripts and styles from this server only (uPlot sets element styles from script, which a
#: policy without 'unsafe-inline' allows); no frames, no forms to elsewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; "
    "object-src 'none'"
)
_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})


def cookie_name(base: str, scope: Scope) -> str:
    """``base`` with the server's port: cookies are shared by every port of a host."""
    server = scope.get("server") or ("", 0)
    return f"{base}_{server[1] or 0}"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _cookies(scope: Scope) -> dict[str, str]:
    raw = _header(scope, b"cookie") or ""
    cookies = {}
    for part in raw.split(";"):
        key, _, value = part.strip().partition("=")
        if key:
            cookies[key] = value
    return cookies


def _host_name(host_header: str) -> str:
    if host_header.startswith("["):
        return host_header[: host_header.find("]") + 1].lower()
    if host_header.count(":") == 1:
        return host_header.rsplit(":", 1)[0].lower()
    return host_header.lower()


def _text_response(status: int, text: str, headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    body = text.encode()

    async def respond(send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                    *_HEADERS,
                    *(headers or []),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return respond


class AccessGuard:
    """ASGI middleware: the Host check, the access token, and the security headers.

    :param access_token: the token every request must carry, or ``None``.
    :param check_host: refuse requests naming a non-loopback host (served on loopback
        without a token).
    """

    def __init__(
        self, app: ASGIApp, *, access_token: str | None, check_host: bool, secret: bytes
    ) -> None:
        self.app = app
        self.access_token = access_token
        self.check_host = check_host
        self._cookie_value = (
            None
            if access_token is None
            else hmac.new(secret, b"access:" + access_token.encode(), hashlib.sha256).hexdigest()
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.check_host:
            host = _host_name(_header(scope, b"host") or "")
            if host not in _LOOPBACK_HOSTS:
                await _text_response(
                    421,
                    f"This treadle ui serves loopback names only (127.0.0.1, localhost), not "
                    f"{host!r}: open the address it printed.",
                )(send)
                return
        if self.access_token is not None and not await self._admit(scope, send):
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _admit(self, scope: Scope, send: Send) -> bool:
        """Whether the request carries the token; answers it when not (or when it came as
        ``?token=``, by setting the cookie and redirecting to the address without it)."""
        assert self.access_token is not None
        assert self._cookie_value is not None
        name = cookie_name("treadle_ui_access", scope)
        if hmac.compare_digest(_cookies(scope).get(name, ""), self._cookie_value):
            return True
        authorization = _header(scope, b"authorization") or ""
        if authorization.startswith("Bearer ") and hmac.compare_digest(
            authorization[7:].strip().encode(), self.access_token.encode()
        ):
            return True
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        supplied = [value for key, value in query if key == "token"]
        if supplied and hmac.compare_digest(supplied[-1].encode(), self.access_token.encode()):
            rest = urlencode([(key, value) for key, value in query if key != "token"])
            location = scope.get("path", "/") + (f"?{rest}" if rest else "")
            cookie = (
                f"{name}={self._cookie_value}; Path=/; HttpOnly; SameSite=Strict; Max-Age=2592000"
            )
            await _text_response(
                303,
                "Signed in; continue to " + location,
                [(b"location", location.encode()), (b"set-cookie", cookie.encode())],
            )(send)
            return False
        await _text_response(
            401,
            "This treadle ui needs its access token: open the address `treadle ui` printed "
            "(it ends in ?token=...), or send 'Authorization: Bearer <token>'.",
        )(send)
        return False


class CsrfProtection:
    """Per-session tokens for the forms that change state.

    A session is a random id in an ``HttpOnly``, ``SameSite=Strict`` cookie; its token is
    ``HMAC(secret, session)``, put in each action form and checked on POST.
    """

    COOKIE = "treadle_ui_session"
    FIELD = "csrf_token"

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def session(self, scope: Scope) -> tuple[str, bool]:
        """The request's session id, and whether it is new (the response must set it)."""
        current = _cookies(scope).get(cookie_name(self.COOKIE, scope), "")
        if len(current) == 43 and current.replace("-", "").replace("_", "").isalnum():
            return current, False
        return secrets.token_urlsafe(32), True

    def set_cookie_header(self, scope: Scope, session: str) -> str:
        name = cookie_name(self.COOKIE, scope)
        return f"{name}={session}; Path=/; HttpOnly; SameSite=Strict"

    def token(self, session: str) -> str:
        return hmac.new(self._secret, b"csrf:" + session.encode(), hashlib.sha256).hexdigest()

    def problem(self, scope: Scope, supplied: str | None) -> str | None:
        """Why a POST is refused, or ``None`` when it comes from this server's own page with
        its session's token."""
        fetch_site = _header(scope, b"sec-fetch-site")
        if fetch_site is not None and fetch_site not in ("same-origin", "none"):
            return f"The request came from another site (Sec-Fetch-Site: {fetch_site})."
        origin = _header(scope, b"origin")
        if origin is not None:
            scheme = scope.get("scheme", "http")
            host = _header(scope, b"host") or ""
            if origin != f"{scheme}://{host}":
                return f"The request came from another origin ({origin})."
        current = _cookies(scope).get(cookie_name(self.COOKIE, scope))
        if not current:
            return "The request carries no session: reload the page and try again."
        if not supplied or not hmac.compare_digest(supplied, self.token(current)):
            return "The form's token does not match this session: reload the page and try again."
        return None
