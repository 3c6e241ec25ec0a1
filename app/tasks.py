"""Stopping the gateway's background tasks without letting one of them hold shutdown forever."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)
STOP_TIMEOUT_S = 5.0


async def stop_task(task: asyncio.Task[None] | None, timeout: float = STOP_TIMEOUT_S) -> None:
    """Cancel ``task`` and wait for it, at most ``timeout`` seconds.

    A task cancelled in the middle of a Redis call can be stuck in the client's clean-up (a
    pub/sub connection closing, say); shutdown must still finish, so after the timeout the task
    is left behind with a warning instead of being awaited forever."""
    if task is None or task.done():
        return
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        log.warning(
            "background task %s did not stop within %.0f s; leaving it", task.get_name(), timeout
        )
        return
    if not task.cancelled() and task.exception() is not None:
        log.warning("background task %s ended with %r", task.get_name(), task.exception())
