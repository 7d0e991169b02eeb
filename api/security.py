"""HTTP hygiene for every response: a Host allow-list and security headers.

- ``TrustedHostMiddleware`` (Starlette's) answers 400 to a Host header not in
  ``Settings.resolved_allowed_hosts``: a server on loopback answers only loopback names, so a web
  page whose DNS name rebinds to 127.0.0.1 cannot read it.
- ``SecurityHeadersMiddleware`` adds a Content-Security-Policy (the dashboard loads only its own
  scripts, styles and data), ``X-Frame-Options: DENY``, ``X-Content-Type-Options: nosniff`` and
  ``Referrer-Policy: no-referrer``. The interactive API docs (/docs, /redoc) load their UI from a
  CDN, so they get the other headers but not the CSP.
"""

from __future__ import annotations

from typing import Any

CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
HEADERS = [(b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff"),
           (b"referrer-policy", b"no-referrer")]
NO_CSP_PATHS = ("/docs", "/redoc")


class SecurityHeadersMiddleware:
    """Pure ASGI: adds the headers above to every HTTP response that does not set them itself."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = list(HEADERS)
        if not scope.get("path", "").startswith(NO_CSP_PATHS):
            extra.append((b"content-security-policy", CSP.encode()))

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(h for h in extra if h[0] not in present)]
            await send(message)

        await self.app(scope, receive, send_with_headers)
