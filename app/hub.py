"""The live hub: one Redis pub/sub listener per process, fanned out to a bounded queue per socket.

Broadcaster style: however many dashboards and students watch a session, this process holds one
subscription to ``cp:live:{session}`` for each session with a socket here (and one per account
topic), taken when the first socket of it arrives and dropped after the last one leaves. Each
message is parsed at most once, to route it to the sockets of the student it concerns; teachers
get every message of their session. What the policy in force forbids is taken out once, here,
before any socket gets the message (``classpulse.views.live_message``): a student's estimate
published before a policy change reaches neither a dashboard nor the student's page.

Why not one pattern subscription to ``cp:live:*``: then every gateway receives every update of
every session and Redis pays for each gateway per publish (docs/capacity.md: the first ceiling
at ~100k students). Per-session channels reach only the gateways that hold a socket of the
session.

One task owns the pub/sub connection: sockets only say which channels they want
(``subscribe``), the listener subscribes and unsubscribes between messages, and ``joined``
lets a socket wait until its channels are confirmed, so nothing published after it starts is
missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from app.tasks import stop_task
from classpulse import contracts, views

log = logging.getLogger(__name__)

_PREFIX = contracts.live_channel("")
# Nobody publishes here: it keeps the listener's connection subscribed while no socket is open.
_IDLE_CHANNEL = _PREFIX + "~hub"
POLL_S = 0.05  # how long the listener waits for a message before it looks at wanted channels


class DropOldestQueue:
    """A socket's bounded outbound queue where live data goes stale, so the newest wins.

    An item pushed with a ``key`` (the hub keys a student's update by its kind and student)
    replaces the one of the same key still waiting, and moves to the back, so a socket that
    falls behind sends each student's latest state once instead of every state in between: a
    40-tile dashboard on a busy gateway gets at most one update per student per send, and the
    gateway pays one send for it (issue 21: live fan-out at class size). Items without a key
    (acks, alerts, pongs, session news) are never merged. When the queue is full a new item
    pushes out the oldest. One consumer per queue (the socket's send loop)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[object, bytes | str] = OrderedDict()
        self._ready = asyncio.Event()
        self._serial = itertools.count()
        self.merged = 0  # items replaced by a newer one of the same key (for tests and figures)

    def push(self, item: bytes | str, key: object = None) -> bool:
        """Put without waiting; return True when an older item was dropped to make room."""
        dropped = False
        if key is not None and key in self._items:
            del self._items[key]
            self.merged += 1
        elif len(self._items) >= self.maxsize:
            self._items.popitem(last=False)
            dropped = True
        self._items[next(self._serial) if key is None else key] = item
        self._ready.set()
        return dropped

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return len(self._items) >= self.maxsize

    def get_nowait(self) -> bytes | str:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.popitem(last=False)[1]

    async def get(self) -> bytes | str:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popitem(last=False)[1]


class _Route(msgspec.Struct):
    # Only the fields needed for routing; msgspec skips the rest without building it.
    type: str | None = None
    student_id: str | None = None
    audience: str | None = None  # "teachers": dashboards only (alerts), never a student page


_route = msgspec.json.Decoder(_Route)
# LiveUpdate types that are a student's whole current state (contracts.LiveUpdate.type).
_STATES = frozenset({"student", "presence"})


class Hub:
    """Routes messages of ``cp:live:{session}`` to subscribed queues. Bytes are from Redis."""

    def __init__(
        self,
        redis: Redis,
        on_drop: Callable[[], None] = lambda: None,
        mode: Callable[[], views.Mode] = lambda: "off",
    ) -> None:
        self._redis = redis
        self._on_drop = on_drop
        self._mode = mode  # the policy in force now (PolicyCache; a bare mode: attention off)
        # session id -> student id (None: the whole session, i.e. dashboards) -> queues
        self._subs: dict[str, dict[str | None, set[DropOldestQueue]]] = defaultdict(
            lambda: defaultdict(set)
        )
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._sent: set[str] = set()  # channels asked for on the current connection
        self._confirmed: set[str] = set()  # ...and confirmed by Redis
        self._dirty = False  # a session gained its first or lost its last socket here

    async def start(self, wait_s: float = 2.0) -> None:
        """Start listening; wait briefly for the subscription so early publishes aren't missed."""
        self._task = asyncio.create_task(self._run(), name="live-hub")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), wait_s)

    async def stop(self) -> None:
        await stop_task(self._task)

    async def joined(self, *keys: str, timeout_s: float = 2.0) -> bool:
        """Wait until the channels of ``keys`` (session ids, account topics) are subscribed;
        False after ``timeout_s`` (Redis away: the listener subscribes when it is back)."""
        channels = {contracts.live_channel(k) for k in keys}
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not channels <= self._confirmed:
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    @contextlib.contextmanager
    def subscribe(
        self, session_id: str, queue: DropOldestQueue, student_id: str | None = None
    ) -> Iterator[DropOldestQueue]:
        """Deliver the session's messages (or one student's) into queue until the block exits
        (``joined`` waits until Redis confirmed the session's channel)."""
        self._dirty = self._dirty or session_id not in self._subs
        self._subs[session_id][student_id].add(queue)
        try:
            yield queue
        finally:
            by_student = self._subs[session_id]
            by_student[student_id].discard(queue)
            if not by_student[student_id]:
                del by_student[student_id]
            if not by_student:
                del self._subs[session_id]
                self._dirty = True

    def dispatch(self, channel: bytes, data: bytes) -> None:
        session_id = channel.decode()[len(_PREFIX) :]
        by_student = self._subs.get(session_id)
        if not by_student:
            return
        data = views.live_message(data, self._mode())
        targets = set(by_student.get(None, ()))
        try:
            route = _route.decode(data)
        except msgspec.DecodeError:
            route = _Route(type="?")  # not ours to judge: dashboards get it as it is, unmerged
            if len(by_student) > 1 or None not in by_student:
                log.warning("live hub: undecodable message on %s", channel)
                return
        student = route.student_id
        # A student's state (emotion or presence) is superseded by their next one of the same
        # kind: queues keep only the newest waiting (DropOldestQueue).
        key = (route.type, student) if student is not None and route.type in _STATES else None
        if len(by_student) > 1 or None not in by_student:  # some student of it listens here
            if route.audience == "teachers":
                pass  # dashboards only; they are in targets already
            elif student is None:  # session-wide news (e.g. session ended): everyone
                for queues in by_student.values():
                    targets |= queues
            else:
                targets |= by_student.get(student, set())
        for queue in targets:
            if queue.push(data, key):
                self._on_drop()

    async def _reconcile(self, pubsub: PubSub) -> None:
        """Subscribe to the channels sockets here want and drop those nobody wants any more."""
        if not self._dirty:
            return
        self._dirty = False
        wanted = {contracts.live_channel(key) for key in self._subs}
        if add := wanted - self._sent:
            await pubsub.subscribe(*add)
            self._sent |= add
        if drop := self._sent - wanted:
            await pubsub.unsubscribe(*drop)
            self._sent -= drop
            self._confirmed -= drop

    def _note(self, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if kind == "message":
            self.dispatch(msg["channel"], msg["data"])
        elif kind == "subscribe":
            channel = msg["channel"].decode()
            if channel in self._sent:
                self._confirmed.add(channel)

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            pubsub = self._redis.pubsub()
            self._sent, self._confirmed, self._dirty = set(), set(), True
            try:
                await pubsub.subscribe(_IDLE_CHANNEL)
                self._subscribed.set()
                backoff = 0.5
                while True:
                    await self._reconcile(pubsub)
                    msg = await pubsub.get_message(timeout=POLL_S)
                    if msg is not None:
                        self._note(msg)
            except (RedisError, OSError) as exc:
                # Redis restarted or unreachable: keep the sockets, resubscribe when it is back.
                log.warning("live hub lost Redis (%s); retrying in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
