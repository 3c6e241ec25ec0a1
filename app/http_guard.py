"""Two pure-ASGI middlewares every HTTP response passes: a request-body cap and security headers.

Pure ASGI rather than ``BaseHTTPMiddleware``: the body cap must act on the byte stream before
any route reads it, and neither should buffer responses (report exports stream).
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Pages set their own, wider policy (app.pages.PAGE_CSP); API answers and files get this one:
# nothing may load from them and nobody may frame them.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# FastAPI's interactive docs load Swagger UI from its CDN and start it with an inline script.
# Only the developer who opens /docs loads them; no page of the product does.
DOCS_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HSTS = "max-age=63072000; includeSubDomains"  # two years; production sits behind TLS


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413: at once when Content-Length says so,
    else as soon as the streamed body passes the cap. Nothing over the cap is buffered."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _message(self) -> str:
        return f"request body too large: at most {self.max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length")
        length = length.strip() if length is not None else None
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            # Connection: close: the rest of the body is never read, so the connection can't
            # carry another request.
            response = JSONResponse(
                {"detail": self._message() if length.isdigit() else "invalid Content-Length"},
                status_code=413 if length.isdigit() else 400,
                headers={"Connection": "close"},
            )
            await response(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # An HTTPException: FastAPI's body reader re-raises those as they are (any
                    # other exception would become a 400 "error parsing the body").
                    raise HTTPException(413, self._message(), headers={"Connection": "close"})
            return message

        await self.app(scope, limited, send)


class SecurityHeaders:
    """Headers every response carries unless the route set its own (pages set a wider CSP)."""

    def __init__(self, app: ASGIApp, production: bool) -> None:
        self.app = app
        self.defaults: list[tuple[bytes, bytes]] = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"same-origin"),  # keep join codes out of other sites' logs
            (b"x-frame-options", b"DENY"),  # frame-ancestors for browsers that predate CSP 2
        ]
        if production:
            self.defaults.append((b"strict-transport-security", HSTS.encode()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = (DOCS_CSP if scope["path"] == "/docs" else API_CSP).encode()

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                for name, value in [(b"content-security-policy", csp), *self.defaults]:
                    if name not in present:
                        headers.append((name, value))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
