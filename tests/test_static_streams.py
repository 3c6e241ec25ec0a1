"""Stalled readers of the onnxruntime wasm against a real gateway process (`classpulse gateway`,
uvicorn as deployed, on the test PostgreSQL and Redis): readers that refuse gzip get a short 406
(the 14 MB module is never inflated per request), readers that take it but never read hold at
most MAX_STREAMS streams and little memory each, further ones get 503 with Retry-After, and the
normal gzip path keeps working with its immutable caching. The gateway's RSS stays far within
the 512 MiB its Kubernetes manifest allows."""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from email.message import Message

import psutil
import pytest

from app.routes.edge_files import MAX_STREAMS, ORT_WASM_GZ, ORT_WASM_URL, RETRY_AFTER_S
from classpulse.cli.devserver import free_port
from classpulse.settings import REPO_ROOT

GATEWAY_LIMIT_MIB = 512  # deploy/k8s/base/gateway.yaml: resources.limits.memory
RAW_SHA256 = "3398c10d07d229bd91b364548e130e0e51a8e5704b88c7c083ebbeb78842dee2"


@pytest.fixture
def gateway(
    clean_db: str, redis_url: str, clean_redis, tmp_path
) -> Iterator[tuple[str, psutil.Process]]:
    port = free_port()
    env = {
        **os.environ,
        "CLASSPULSE_ENV": "development",
        "CLASSPULSE_DATABASE_URL": clean_db,
        "CLASSPULSE_REDIS_URL": redis_url,
        "CLASSPULSE_HOST": "127.0.0.1",
        "CLASSPULSE_PORT": str(port),
        "CLASSPULSE_DATA_DIR": str(tmp_path / "data"),
        "CLASSPULSE_SECRET_KEY": "static-streams-test-secret-key-0123456789",
        "CLASSPULSE_LOG_LEVEL": "WARNING",
    }
    log = open(tmp_path / "gateway.log", "wb")  # noqa: SIM115 (the child's lifetime)
    proc = subprocess.Popen(
        [sys.executable, "-m", "classpulse", "gateway"],
        env=env,
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "gateway.log").read_text()
            try:
                urllib.request.urlopen(base + "/healthz", timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "gateway not up after 60 s"
                time.sleep(0.2)
        yield base, psutil.Process(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def stalled(base: str, accept_encoding: str | None) -> socket.socket:
    """A reader that sends its request and never reads (a 4 KiB receive buffer, so the server's
    writes stall at once rather than filling megabytes of kernel buffers)."""
    port = int(base.rsplit(":", 1)[1])
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    header = f"Accept-Encoding: {accept_encoding}\r\n" if accept_encoding else ""
    s.sendall(f"GET {ORT_WASM_URL} HTTP/1.1\r\nHost: t\r\n{header}\r\n".encode())
    return s


def status_of(s: socket.socket) -> tuple[int, bytes]:
    s.settimeout(10)
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    return int(head.split(b" ", 2)[1]), head


def fetch_gzip(base: str) -> tuple[int, Message, bytes]:
    req = urllib.request.Request(base + ORT_WASM_URL, headers={"Accept-Encoding": "gzip"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def rss_mib(proc: psutil.Process) -> float:
    return proc.memory_info().rss / 2**20


def test_stalled_wasm_readers_leave_the_gateway_within_its_memory(gateway):
    base, proc = gateway
    status, _, body = fetch_gzip(base)  # warm: the route, the file, the thread pool
    assert status == 200 and len(body) == ORT_WASM_GZ.stat().st_size
    time.sleep(0.5)
    before = rss_mib(proc)
    with ExitStack() as stack:
        # 50 readers that refuse gzip: each gets a short 406 and nothing is inflated.
        refusing = [stack.enter_context(stalled(base, "identity")) for _ in range(50)]
        # 50 readers that take gzip (or say nothing, which means any coding) and never read.
        taking = [stack.enter_context(stalled(base, None if i % 2 else "gzip")) for i in range(50)]
        time.sleep(2.0)
        during = rss_mib(proc)
        # The normal path still works meanwhile (51 streams, under MAX_STREAMS).
        status, headers, body = fetch_gzip(base)
        assert status == 200 and headers["Content-Encoding"] == "gzip"
        assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert hashlib.sha256(gzip.decompress(body)).hexdigest() == RAW_SHA256
        # Past MAX_STREAMS stalled streams: 503 with Retry-After, at once.
        more = [stack.enter_context(stalled(base, "gzip")) for _ in range(MAX_STREAMS - 50 + 6)]
        statuses = [status_of(s) for s in more]
        busy = [head for code, head in statuses if code == 503]
        assert len(busy) == 6, [code for code, _ in statuses]
        assert f"retry-after: {RETRY_AFTER_S}".encode() in busy[0].lower()
        assert all(status_of(s)[0] == 406 for s in refusing[:5])
        after = rss_mib(proc)
        assert all(status_of(s)[0] == 200 for s in taking[:5])
    # The stalled readers gone, their slots are free again.
    deadline = time.monotonic() + 10
    while (status := fetch_gzip(base)[0]) == 503 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status == 200
    growth = max(during, after) - before
    print(  # the figures the README quotes (pytest -s)
        f"gateway RSS: {before:.0f} MiB idle, {during:.0f} MiB with 50 refused + 50 stalled "
        f"readers, {after:.0f} MiB with {MAX_STREAMS} streams held (+{growth:.1f} MiB)"
    )
    assert growth < 64 and max(during, after) < GATEWAY_LIMIT_MIB / 2


def test_a_stalled_stream_is_cut_at_its_deadline_and_frees_its_slot(monkeypatch, tmp_path):
    """BoundedFileResponse under real uvicorn (in this process, limits shrunk): two stalled
    readers take both slots, a third request gets 503 at once; at the deadline the server closes
    the stalled connections and the slots are free again."""
    import threading

    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Route

    from app.routes import edge_files

    monkeypatch.setattr(edge_files, "MAX_STREAMS", 2)
    monkeypatch.setattr(edge_files, "STREAM_DEADLINE_S", 1.5)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(8 << 20))  # far more than the socket buffers hold

    async def endpoint(request):
        return edge_files.BoundedFileResponse(big)

    port = free_port()
    config = uvicorn.Config(
        Starlette(routes=[Route(ORT_WASM_URL, endpoint)]),
        host="127.0.0.1",
        port=port,
        log_level="critical",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        while not server.started:
            time.sleep(0.05)
        a, b = stalled(base, "gzip"), stalled(base, "gzip")
        assert status_of(a)[0] == status_of(b)[0] == 200
        c = stalled(base, "gzip")
        assert status_of(c)[0] == 503
        c.close()
        time.sleep(2.5)  # past the deadline, still not reading
        for s in (a, b):  # what is left is what the kernel buffered: then the server's close
            s.settimeout(5)
            got = 0
            while chunk := s.recv(1 << 16):
                got += len(chunk)
            s.close()
            assert got < big.stat().st_size // 2  # cut, not sent in full
        d = stalled(base, "gzip")
        assert status_of(d)[0] == 200  # the slots came back
        d.close()
    finally:
        server.should_exit = True
        thread.join(10)
