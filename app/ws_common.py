"""What both WebSocket endpoints share: the Origin check, closing with a reason, the pump loops."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import anyio
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from app.auth import bearer_token
from classpulse.settings import Settings

# Close codes in the private range, so pages can tell "log in again" from "not allowed".
UNAUTHORIZED = 4401
FORBIDDEN = 4403
NOT_FOUND = 4404
POLICY_VIOLATION = 1008

# Browsers cannot set headers on a WebSocket, and a token in the URL ends up in access logs.
# Pages offer two subprotocols instead: SUBPROTOCOL, which the server selects, and
# TOKEN_PREFIX + token, which carries the token in the handshake's Sec-WebSocket-Protocol header
# (never logged, never echoed back). Scripts may send ``Authorization: Bearer`` instead.
SUBPROTOCOL = "classpulse"
TOKEN_PREFIX = "classpulse.token."


def origin_allowed(ws: WebSocket, settings: Settings) -> bool:
    """Browsers always send Origin: it must be this site, or cookies would let any page connect.

    A missing Origin is a non-browser client (benchmarks, scripts), which carries its token itself.
    """
    origin = ws.headers.get("origin")
    if origin is None:
        return True
    parts = urlsplit(origin)
    if parts.netloc and parts.netloc.lower() == ws.headers.get("host", "").lower():
        return True
    if settings.public_url:
        public = urlsplit(settings.public_url)
        return (parts.scheme, parts.netloc.lower()) == (public.scheme, public.netloc.lower())
    return False


def socket_token(ws: WebSocket) -> str | None:
    """The token of the handshake: the subprotocol that carries it, else a bearer header."""
    for proto in ws.scope.get("subprotocols", ()):
        if proto.startswith(TOKEN_PREFIX):
            return proto[len(TOKEN_PREFIX) :] or None
    return bearer_token(ws)


async def accept(ws: WebSocket) -> None:
    """Accept, selecting our subprotocol when the page offered it (a browser that offered
    subprotocols fails the handshake unless the server selects one)."""
    offered = ws.scope.get("subprotocols", ())
    await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)


async def refuse(ws: WebSocket, code: int, reason: str) -> None:
    """Accept, then close with a code: a close before accept reaches the browser as a bare 403."""
    await accept(ws)
    await close(ws, code, reason)


async def close(ws: WebSocket, code: int = 1000, reason: str = "") -> None:
    if (
        ws.application_state == WebSocketState.CONNECTED
        and ws.client_state == WebSocketState.CONNECTED
    ):
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await ws.close(code, reason)


async def run_pair(
    receiver: Callable[[], Awaitable[None]], sender: Callable[[], Awaitable[None]]
) -> None:
    """Run a socket's receiver and sender together; when either ends, stop the other.

    Close the socket after this returns, never from inside a half: the other half may be
    cancelled mid-send, and Starlette marks a socket closed before its close frame is out.
    """

    async with anyio.create_task_group() as tg:

        async def run(part: Callable[[], Awaitable[None]]) -> None:
            # A peer that vanished mid-send is the normal end of a socket, not an error.
            with contextlib.suppress(WebSocketDisconnect):
                await part()
            tg.cancel_scope.cancel()

        tg.start_soon(run, receiver)
        tg.start_soon(run, sender)


def shielded(seconds: float) -> anyio.CancelScope:
    """For clean-up in `finally` that must run even while the server is cancelling the handler."""
    return anyio.CancelScope(shield=True, deadline=anyio.current_time() + seconds)
