"""A class that starts at once, simulated: pages that arrive within a window, each fetching what a
student's browser fetches (the join page, its scripts, the onnxruntime-web runtime and the face
detector), joining, streaming faces messages with the page's in-flight window, and reconnecting
after a dropped socket as student.js does (api.js's backoff: 1 s, 2 s, 4 s … each drawn from
[d/2, d], the same join token, no second join). A teacher socket records when each student's
first emotion reaches the dashboard. Used by tests/test_class_arrival.py and
bench/class_arrival.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import websockets

from app.routes.edge_files import ORT_WASM_URL

# What student.js and edge.js fetch besides the page's own <script>/<link> references: the
# runtime's loader and its 3.7 MB (gzipped) WebAssembly, served with a one-year immutable cache.
RUNTIME = [
    "/static/vendor/onnxruntime-web/ort.wasm.min.js",
    "/static/vendor/onnxruntime-web/ort-wasm-simd-threaded.mjs",
    ORT_WASM_URL,
]


@dataclass
class ClassStats:
    opened_at: dict[str, float] = field(default_factory=dict)  # student id -> link opened
    first_emotion_at: dict[str, float] = field(default_factory=dict)
    join_status: Counter[int] = field(default_factory=Counter)
    acked: Counter[str] = field(default_factory=Counter)  # per student
    refused: Counter[str] = field(default_factory=Counter)
    reconnects: Counter[str] = field(default_factory=Counter)
    back_after_s: list[float] = field(default_factory=list)  # drop -> config on the new socket
    bytes_fetched: int = 0
    immutable: set[str] = field(default_factory=set)  # asset paths served with immutable caching
    shown_reconnecting: set[str] = field(default_factory=set)  # students the dashboard said so
    errors: list[str] = field(default_factory=list)

    def open_to_emotion_s(self) -> list[float]:
        return sorted(
            self.first_emotion_at[s] - self.opened_at[s]
            for s in self.first_emotion_at
            if s in self.opened_at
        )


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


class Backoff:
    """api.js's backoff: the ceiling doubles from 1 s to 30 s, each delay drawn from [d/2, d]."""

    def __init__(self, first_s: float = 1.0, cap_s: float = 30.0) -> None:
        self.first_s, self.cap_s, self.attempt = first_s, cap_s, 0

    def next(self) -> float:
        ceiling = min(self.cap_s, self.first_s * 2**self.attempt)
        self.attempt += 1
        return ceiling / 2 + random.random() * ceiling / 2

    def reset(self) -> None:
        self.attempt = 0


async def fetch(client: httpx.AsyncClient, path: str, stats: ClassStats) -> bytes:
    """GET as a browser does (gzip accepted); the bytes as they travelled, not inflated."""
    async with client.stream("GET", path, headers={"Accept-Encoding": "gzip"}) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"GET {path}: {resp.status_code}")
        body = b"".join([chunk async for chunk in resp.aiter_raw()])
        if "immutable" in resp.headers.get("cache-control", ""):
            stats.immutable.add(path)
    stats.bytes_fetched += len(body)
    return body


async def open_link(
    client: httpx.AsyncClient, join_code: str, name: str, stats: ClassStats
) -> tuple[dict | None, float]:
    """What a browser does from opening the link to the student's "join": the page and what it
    loads, the runtime, then the join request. Returns the join answer (None if refused) and
    when the link was opened."""
    opened = time.time()
    page = (await fetch(client, f"/join/{join_code}", stats)).decode(errors="replace")
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page)
    await asyncio.gather(*(fetch(client, a, stats) for a in dict.fromkeys(assets + RUNTIME)))
    resp = await client.post(f"/api/join/{join_code}", json={"display_name": name, "consent": True})
    stats.join_status[resp.status_code] += 1
    if resp.status_code != 201:
        stats.errors.append(f"join {name}: {resp.status_code} {resp.text[:120]}")
        return None, opened
    return resp.json(), opened


async def stream(
    ws_base: str,
    client: httpx.AsyncClient,
    joined: dict,
    payload: bytes,
    fps: float,
    until: float,
    stats: ClassStats,
    drop_at: float | None = None,
) -> None:
    """One page's socket life: stream until ``until``; at ``drop_at`` (monotonic) its network
    drops (the transport is cut with no close handshake) and it comes back as the page would."""
    sid, backoff, fetched_model = joined["student_id"], Backoff(), False
    dropped_at: float | None = None
    while time.monotonic() < until:
        try:
            ws = await websockets.connect(
                ws_base + "/ws/student",
                additional_headers={"Authorization": "Bearer " + joined["token"]},
                compression=None,
                max_size=2**20,
            )
        except (OSError, websockets.InvalidHandshake) as exc:
            stats.errors.append(f"connect {sid}: {exc}")
            await asyncio.sleep(backoff.next())
            continue
        try:
            config = json.loads(await ws.recv())
            backoff.reset()
            if dropped_at is not None:
                stats.back_after_s.append(time.monotonic() - dropped_at)
                dropped_at = None
            if not fetched_model:  # the detector, once per device (then from the cache)
                await fetch(client, config["detector_url"], stats)
                await fetch(client, config["detector_url"].replace(".onnx", ".json"), stats)
                fetched_model = True
            window = asyncio.Semaphore(int(config.get("max_in_flight", 2)))

            async def receive(sock=ws, window=window) -> None:
                async for message in sock:
                    msg = json.loads(message)
                    if msg.get("type") == "ack":
                        (stats.acked if msg.get("ok") else stats.refused)[sid] += 1
                        window.release()

            receiver = asyncio.create_task(receive())
            next_at = time.monotonic()
            while time.monotonic() < until and not receiver.done():
                if drop_at is not None and time.monotonic() >= drop_at:
                    drop_at, dropped_at = None, time.monotonic()
                    ws.transport.abort()  # the Wi-Fi went: no close frame
                    stats.reconnects[sid] += 1
                    break
                next_at += 1 / fps
                if not window.locked():
                    await window.acquire()
                    await ws.send(payload)
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if dropped_at is None:
                await asyncio.sleep(1.0)  # the last acks
            receiver.cancel()
            with contextlib.suppress(BaseException):
                await receiver
        except (websockets.ConnectionClosed, OSError) as exc:
            if dropped_at is None:
                stats.errors.append(f"socket {sid}: {exc!r}")
                dropped_at = time.monotonic()
        finally:
            with contextlib.suppress(Exception):
                await ws.close()
        if dropped_at is not None:
            await asyncio.sleep(backoff.next())
        else:
            return


async def teacher(ws_base: str, token: str, session_id: str, until: float, stats: ClassStats):
    async with websockets.connect(
        ws_base + f"/ws/sessions/{session_id}/live",
        additional_headers={"Authorization": "Bearer " + token},
        max_size=2**24,
    ) as ws:
        while time.monotonic() < until:
            try:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
            except TimeoutError:
                continue
            if msg.get("type") == "student" and msg.get("emotion"):
                stats.first_emotion_at.setdefault(msg["student_id"], time.time())
            elif msg.get("type") == "presence" and msg.get("presence") == "reconnecting":
                stats.shown_reconnecting.add(msg["student_id"])


async def run_class(
    base: str,
    teacher_token: str,
    session: dict,
    payload: bytes,
    *,
    students: int = 40,
    arrive_within_s: float = 30.0,
    stream_s: float = 15.0,
    fps: float = 2.0,
    drop_share: float = 0.0,
) -> ClassStats:
    """``students`` pages opening the link at random times within ``arrive_within_s``, each
    streaming ``stream_s`` after it joined; ``drop_share`` of them lose their socket once, half
    way through."""
    stats = ClassStats()
    ws_base = base.replace("https://", "wss://").replace("http://", "ws://")
    limits = httpx.Limits(max_connections=students * 2)
    rng = random.Random(18)
    arrivals = sorted(rng.uniform(0, arrive_within_s) for _ in range(students))
    dropping = set(rng.sample(range(students), round(students * drop_share)))
    t0 = time.monotonic()
    end = t0 + arrive_within_s + stream_s + 5

    async def page(i: int, client: httpx.AsyncClient) -> None:
        await asyncio.sleep(max(0.0, t0 + arrivals[i] - time.monotonic()))
        try:
            joined, opened = await open_link(client, session["join_code"], f"Student {i}", stats)
        except (httpx.HTTPError, RuntimeError) as exc:
            stats.errors.append(f"page {i}: {exc!r}")
            return
        if joined is None:
            return
        stats.opened_at[joined["student_id"]] = opened
        until = time.monotonic() + stream_s
        drop_at = time.monotonic() + stream_s / 2 if i in dropping else None
        await stream(ws_base, client, joined, payload, fps, until, stats, drop_at)

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60, verify=False) as client:
        watcher = asyncio.create_task(teacher(ws_base, teacher_token, session["id"], end, stats))
        await asyncio.sleep(0.3)
        await asyncio.gather(*(page(i, client) for i in range(students)))
        await asyncio.sleep(2.0)  # the last emotions reach the dashboard
        watcher.cancel()
        with contextlib.suppress(BaseException):
            await watcher
    return stats
