"""Load suite: N simulated students against the running service, bounded in time.

    .venv/bin/python bench/load_suite.py --students 100 --seconds 30
    .venv/bin/python bench/load_suite.py --sweep 100,200,400 --seconds 20   # end-to-end p95 per level
    .venv/bin/python bench/load_suite.py --capture edge --students 100 --seconds 30

--capture edge: each simulated student sends, instead of the JPEG, the faces message a page
running the detector would send for the same frame (docs/edge-wire.md): the boxes, scores,
keypoints and 64×64 grey crops made beforehand with the worker's own detector and crop code
(tests/edge_helpers.py); the service runs with CLASSPULSE_CAPTURE_MODE=edge. Both modes print the
bytes per message, so two runs compare ingest bytes, worker throughput and latency.

Starts `classpulse run` on a free local port (embedded PostgreSQL and Redis, one worker unless
--workers), joins N students through the API and streams a real face JPEG from each over the
student WebSocket at 2 fps with the page's in-flight window, behaving as student.js does: it
skips a capture while the window is full, obeys the gateway's "rate" messages (backpressure)
and reports its captured frames. A teacher socket measures the time from a frame sent to its
emotion on the dashboard. Prints, per level: frames/s processed, p50/p95/p99 frame-to-dashboard
latency, frames dropped by reason (gateway and worker), the rate the gateway asked for, and the
memory (RSS) of each process at start and end. With --sweep, one service runs every level in
turn (a new class session each).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import psutil
import uvloop
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classpulse.cli.devserver import DevServer  # noqa: E402
from tests import chaos  # noqa: E402


@dataclass
class Stats:
    sent_at: dict[tuple[str, int], float] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    acks: Counter[str] = field(default_factory=Counter)
    rates: Counter[float] = field(default_factory=Counter)  # rate messages received, by fps
    sent: int = 0
    skipped: int = 0
    connected: int = 0  # students whose socket is open (their config received)


class _Message(msgspec.Struct):
    """The fields of a socket message the simulated pages and teacher read (the rest skipped):
    the load generator shares the box with the service, so it decodes as little as it can."""

    type: str = ""
    ok: bool | None = None
    reason: str | None = None
    fps: float | None = None
    student_id: str | None = None
    seq: int | None = None


_decode = msgspec.json.Decoder(_Message).decode


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + token}  # a header: tokens never go in URLs


# Every simulated student joins from this one address, hundreds a minute, into one session:
# the limits meant for a real classroom would refuse them.
LOAD_ENV = {
    "CLASSPULSE_JOINS_PER_MINUTE_PER_ADDRESS": "100000",
    "CLASSPULSE_JOINS_PER_MINUTE_PER_SESSION": "100000",
    "CLASSPULSE_MAX_STUDENTS_PER_SESSION": "100000",
}


async def student(
    url: str,
    token: str,
    student_id: str,
    payload: bytes,
    fps: float,
    until: float,
    stats: Stats,
    capture: str = "frames",
) -> None:
    """One page: ``payload`` (a JPEG, or with ``capture`` "edge" a faces message) per capture."""
    async with websockets.connect(
        url, additional_headers=_auth(token), max_size=2**20, compression=None
    ) as ws:
        config = json.loads(await ws.recv())
        stats.connected += 1
        window = asyncio.Semaphore(int(config.get("max_in_flight", 2)))
        rate = {"fps": float(config.get("fps", fps))}
        seq, captured = 0, 0

        async def receive() -> None:
            async for message in ws:
                msg = _decode(message)
                if msg.type == "ack":
                    stats.acks["accepted" if msg.ok else msg.reason or "?"] += 1
                    window.release()
                elif msg.type == "rate" and msg.fps is not None:  # backpressure: slow down
                    rate["fps"] = max(0.1, msg.fps)  # (or speed up again)
                    stats.rates[rate["fps"]] += 1

        receiver = asyncio.create_task(receive())
        next_at, next_report = time.monotonic(), time.monotonic() + 5
        try:
            while time.monotonic() < until:
                next_at += 1 / rate["fps"]
                captured += 1
                if window.locked():
                    stats.skipped += 1  # the page skips the capture instead of queueing it
                else:
                    await window.acquire()
                    seq += 1
                    stats.sent_at[(student_id, seq)] = time.time()
                    stats.sent += 1
                    await ws.send(payload)
                if time.monotonic() > next_report:
                    report = {"type": "stats", "captured": captured, "capture": capture}
                    if capture == "edge":
                        report["detector_ms"] = EDGE_DETECTOR_MS
                    await ws.send(json.dumps(report))
                    captured, next_report = 0, next_report + 5
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            await asyncio.sleep(1.0)  # the last acks
        finally:
            receiver.cancel()


async def teacher(url: str, token: str, until: float, stats: Stats) -> None:
    async with websockets.connect(url, additional_headers=_auth(token), max_size=2**24) as ws:
        while time.monotonic() < until:
            try:
                message = await asyncio.wait_for(ws.recv(), timeout=1.0)
            except TimeoutError:
                continue
            msg = _decode(message)
            if msg.type == "student" and msg.seq is not None:
                sent = stats.sent_at.get((msg.student_id, msg.seq))
                if sent is not None:
                    stats.latencies_ms.append((time.time() - sent) * 1000)


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 2 else float("nan")


def metrics(server: DevServer) -> dict[str, float]:
    """Sample name with labels -> value, from the gateway's /metrics."""
    text = urllib.request.urlopen(server.base + "/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def processes(server: DevServer) -> dict[str, list[psutil.Process]]:
    """The service's processes by role; the embedded PostgreSQL daemonises, so found by its pid file."""
    roles: dict[str, list[psutil.Process]] = {}
    root = psutil.Process(server.proc.pid)
    for p in [root, *root.children(recursive=True)]:
        cmd = " ".join(p.cmdline())
        role = next(
            (r for r in ("gateway", "worker", "aggregator") if cmd.endswith(f"classpulse {r}")),
            None,
        )
        if p == root:
            role = "supervisor (run)"
        elif "redis-server" in cmd:
            role = "redis (embedded)"
        roles.setdefault(role or p.name(), []).append(p)
    pid_file = server.data_dir / "postgres" / "postmaster.pid"
    if pid_file.exists():
        pm = psutil.Process(int(pid_file.read_text().split()[0]))
        roles["postgres (embedded, all backends)"] = [pm, *pm.children()]
    return roles


def rss_mb(procs: list[psutil.Process]) -> float:
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total / 2**20


def cpu_by_role(server: DevServer) -> dict[str, float]:
    """CPU seconds (user + system, from /proc via psutil) used so far by each role's processes,
    and by this load generator itself: sampled before and after a level, the difference names
    the process that pays (and the one that saturates)."""
    out: dict[str, float] = {}
    for role, procs in processes(server).items():
        total = 0.0
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                t = p.cpu_times()
                total += t.user + t.system
        out[role] = total
    me = psutil.Process().cpu_times()
    out["load generator"] = me.user + me.system
    # The whole box (every core, user + system + interrupts): what no process above was charged
    # with shows as "other" (processes forked meanwhile, such as Redis's append-only file
    # rewrite; the kernel's networking; anyone else on the box).
    box = psutil.cpu_times()
    out[BOX] = box.user + box.nice + box.system + box.irq + box.softirq + box.steal
    return out


BOX = "whole box"


def cpu_table(
    before: dict[str, float], after: dict[str, float], messages: float, secs: float
) -> str:
    """Per role: CPU seconds per 1,000 messages and share of one core over the level; then what
    the box spent besides (other) and in all."""
    used = {role: after[role] - before.get(role, 0.0) for role in after}
    box = used.pop(BOX, 0.0)
    used["other (not a process above)"] = box - sum(used.values())
    used[f"{BOX} ({psutil.cpu_count()} cores)"] = box
    rows = []
    for role in sorted(used, key=lambda k: (BOX in k, -used[k])):
        if used[role] <= 0:
            continue
        per_k = used[role] / max(1.0, messages) * 1000
        rows.append(
            f"    {role:<36} {per_k:7.3f} s/1k msgs  {used[role] / secs * 100:5.0f}% of a core"
        )
    return "\n".join(rows)


EDGE_DETECTOR_MS = 8.0  # what the simulated pages report (their "detector" costs nothing here)


def payloads() -> dict[str, bytes]:
    """What a simulated page sends per capture, by capture mode: the face JPEG, or the faces
    message for the same frame (the worker's detector and crop code, run once here)."""
    from classpulse.settings import Settings
    from tests.edge_helpers import faces_message
    from worker.pipeline import FramePipeline

    jpeg = chaos.frame_jpegs()[0]
    pipeline = FramePipeline.from_settings(Settings(providers=["cpu"]))
    return {"frames": jpeg, "edge": faces_message(pipeline, jpeg, detector_ms=EDGE_DETECTOR_MS)}


async def run_level(
    server: DevServer,
    n: int,
    seconds: float,
    fps: float,
    capture: str,
    data: bytes,
    class_size: int = 0,
) -> dict:
    """One level: ``n`` students in classes of ``class_size`` (0: all in one), each class with
    its teacher's dashboard socket."""
    token = server.login()
    classes = -(-n // class_size) if class_size else 1
    sessions = [
        server.api("POST", "/api/sessions", {"title": f"Load {n} class {k + 1}"}, token)
        for k in range(classes)
    ]
    students = [
        server.api(
            "POST",
            f"/api/join/{sessions[i % classes]['join_code']}",
            {"display_name": f"Student {i + 1}", "consent": True},
        )
        for i in range(n)
    ]
    stats = Stats()
    before = metrics(server)
    cpu_before = cpu_by_role(server)
    until = time.monotonic() + seconds
    tasks = [
        asyncio.create_task(
            teacher(f"{server.ws_base}/ws/sessions/{session['id']}/live", token, until + 3, stats)
        )
        for session in sessions
    ]
    await asyncio.sleep(0.5)
    t0 = time.monotonic()
    for i, s in enumerate(students):
        url = f"{server.ws_base}/ws/student"
        tasks.append(
            asyncio.create_task(
                student(url, s["token"], s["student_id"], data, fps, until, stats, capture)
            )
        )
        if i % 10 == 9:
            await asyncio.sleep(1 / fps / 10)  # spread the students' phases
    steady = asyncio.create_task(steady_cpu(server, stats, n, until))
    await asyncio.gather(*tasks)
    elapsed = min(seconds, time.monotonic() - t0)  # the sending window (rates are over it)
    cpu_after = cpu_by_role(server)  # the sending window only, as the rates are
    await asyncio.sleep(2)  # the aggregator's last batch
    after = metrics(server)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    drops = {
        k.split('"')[1]: v
        for k, v in delta.items()
        if k.startswith("classpulse_frames_dropped_total{") and v
    }
    streams = [
        server.api("GET", f"/api/sessions/{session['id']}/stream-stats", token=token)
        for session in sessions
    ]
    ingest = {
        kind: (
            delta.get(f'classpulse_ingest_messages_total{{kind="{kind}"}}', 0),
            delta.get(f'classpulse_ingest_bytes_total{{kind="{kind}"}}', 0),
        )
        for kind in ("frame", "faces")
    }
    return {
        "n": n,
        "fps": fps,
        "capture": capture,
        "message_bytes": len(data),
        "ingest": ingest,
        "seconds": elapsed,
        "stats": stats,
        "drops": drops,
        "processed": delta.get("classpulse_frames_processed_total", 0),
        "received": delta.get("classpulse_frames_received_total", 0),
        "api_processed": sum(
            s["processed"] for stream in streams for s in stream["students"].values()
        ),
        "classes": classes,
        "target_fps": after.get("classpulse_target_fps", float("nan")),
        "cpu": (cpu_before, cpu_after),
        "steady": await steady,
    }


async def steady_cpu(server: DevServer, stats: Stats, n: int, until: float) -> tuple | None:
    """CPU by role over the level's steady part: from 1 s after the last student connected to
    0.5 s before the end. The whole level's table also holds the sockets' connects (token,
    database check, presence: ≈ 1–2 ms of gateway CPU each), which at a few hundred students
    and 10 s is a tenth of the gateway's figure; this one is per message only."""
    while stats.connected < n and time.monotonic() < until:
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    end = until - 0.5
    if time.monotonic() > end - 2.0:
        return None  # too short to say anything: run longer levels
    before, sent0, t0 = cpu_by_role(server), stats.sent, time.monotonic()
    await asyncio.sleep(end - t0)
    after, sent1, t1 = cpu_by_role(server), stats.sent, time.monotonic()
    return before, after, sent1 - sent0, t1 - t0


def report(r: dict) -> None:
    s, lat, secs = r["stats"], r["stats"].latencies_ms, r["seconds"]
    print(
        f"\n{r['n']} students × {r['fps']:g} fps for {secs:.0f} s in {r['classes']} class(es), "
        f"capture {r['capture']}: page captures skipped (window full) {s.skipped}, sent {s.sent} "
        f"({s.sent / secs:.0f}/s)"
    )
    ingest = ", ".join(
        f"{kind} {n:.0f} messages, {b / 1e6:.2f} MB ({b / n:.0f} B/message)"
        for kind, (n, b) in r["ingest"].items()
        if n
    )
    print(
        f"  bytes per message: {r['message_bytes']} ({r['capture']}); gateway ingest: "
        f"{ingest or 'none'}; {sum(b for _, b in r['ingest'].values()) / secs / 1e6:.2f} MB/s"
    )
    print(
        f"  processed by the worker(s): {r['processed']:.0f} ({r['processed'] / secs:.0f} frames/s); "
        f"per-student API total {r['api_processed']}"
    )
    print(f"  dropped by reason: {r['drops'] or 'none'}; acks: {dict(s.acks)}")
    print(
        f"  backpressure: rate messages {dict(s.rates) or 'none'}; target fps at the end {r['target_fps']}"
    )
    print("  CPU per process over the level, connects included (who pays; the busiest first):")
    print(cpu_table(*r["cpu"], max(s.sent, 1), secs))
    if r["steady"] is not None:
        before, after, sent, steady_s = r["steady"]
        print(
            f"  CPU per process, steady (all connected; {steady_s:.1f} s, {sent} messages, "
            f"{sent / steady_s:.0f}/s):"
        )
        print(cpu_table(before, after, max(sent, 1), steady_s))
    if lat:
        print(
            f"  frame sent → emotion on the dashboard: n={len(lat)} p50 {pct(lat, 50):.0f} ms, "
            f"p95 {pct(lat, 95):.0f} ms, p99 {pct(lat, 99):.0f} ms, max {max(lat):.0f} ms"
        )


async def main_async(args: argparse.Namespace, server: DevServer) -> list[dict]:
    levels = [int(x) for x in args.sweep.split(",")] if args.sweep else [args.students]
    sizes = payloads()
    # "both": every level in frames mode, then in edge mode, on the same server (the gateway
    # takes either kind of message whatever it tells pages), so the two are compared in one run.
    modes = ("frames", "edge") if args.capture == "both" else (args.capture,)
    print(
        f"bytes per message: frames (JPEG) {len(sizes['frames'])}, edge (faces message, one "
        f"face with its crop) {len(sizes['edge'])}; these students send {' then '.join(modes)}"
    )
    results = []
    for mode in modes:
        for n in levels:
            await settle(server, args.fps)
            results.append(
                await run_level(
                    server, n, args.seconds, args.fps, mode, sizes[mode], args.class_size
                )
            )
            report(results[-1])
    return results


async def settle(server: DevServer, fps: float, limit_s: float = 60.0) -> None:
    """Wait until the gateway's target rate is back at ``fps`` (the AIMD raises it by 0.25 fps
    per calm tick after an overload), so that one level's backlog doesn't slow the next."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        target = metrics(server).get("classpulse_target_fps", fps)
        if target >= fps:
            return
        await asyncio.sleep(1)
    print(f"  (target fps still below {fps:g} after {limit_s:.0f} s: the next level starts anyway)")


def gateway_per_k(r: dict) -> str:
    """The gateway's CPU seconds per 1,000 messages, steady and over the whole level."""
    (before, after), sent = r["cpu"], max(r["stats"].sent, 1)
    whole = (after["gateway"] - before["gateway"]) / sent * 1000
    if r["steady"] is None:
        return f"{whole:.3f} s/1k msgs (level)"
    before, after, steady_sent, _ = r["steady"]
    steady = (after["gateway"] - before["gateway"]) / max(steady_sent, 1) * 1000
    return f"{steady:.3f} s/1k msgs steady, {whole:.3f} over the level"


def met(r: dict, p95_ms: float = 250.0) -> bool:
    """A level is served when its p95 is within ``p95_ms``, no frame went stale, and the gateway
    never asked the pages to send slower than the level's rate (backpressure: then the service
    kept up by lowering the load it was offered)."""
    return (
        pct(r["stats"].latencies_ms, 95) <= p95_ms
        and not r["drops"].get("stale")
        and not any(fps < r["fps"] for fps in r["stats"].rates)
    )


def most_students(results: list[dict], p95_ms: float = 250.0) -> dict[str, int]:
    """Per capture mode, the most students whose level was served (``met``)."""
    best: dict[str, int] = {}
    for r in results:
        ok = met(r, p95_ms)
        if ok:
            best[r["capture"]] = max(best.get(r["capture"], 0), r["n"])
    return best


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--students", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--fps", type=float, default=2.0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--sweep", help="comma-separated student counts, e.g. 100,200,400")
    ap.add_argument(
        "--class-size",
        type=int,
        default=0,
        help="students per class session, each with its teacher's dashboard (0: one class)",
    )
    ap.add_argument(
        "--capture",
        choices=("frames", "edge", "both"),
        default="frames",
        help="what the simulated pages send: JPEG frames, faces messages (edge capture), or "
        "both, one after the other in the same run",
    )
    args = ap.parse_args()
    env = {**LOAD_ENV, "CLASSPULSE_CAPTURE_MODE": "frames" if args.capture == "frames" else "edge"}
    with (
        tempfile.TemporaryDirectory(prefix="cp-load-") as tmp,
        DevServer(Path(tmp), workers=args.workers, env=env) as server,
    ):
        roles = processes(server)
        start_rss = {role: rss_mb(ps) for role, ps in roles.items()}
        # uvloop, as the gateway runs: the load generator shares the two cores it measures.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            results = runner.run(main_async(args, server))
        print(f"\nmemory (RSS, MB) at start → end ({args.workers} worker process(es)):")
        for role, ps in sorted(roles.items()):
            print(
                f"  {role:<36} {start_rss[role]:7.1f} → {rss_mb(ps):7.1f}  ({len(ps)} process(es))"
            )
        if len(results) > 1:
            print("\nend-to-end p95 by load:")
            for r in results:
                lat = r["stats"].latencies_ms
                print(
                    f"  {r['n']:>4} students ({r['capture']}): offered {r['n'] * args.fps:.0f} frames/s, processed "
                    f"{r['processed'] / r['seconds']:.0f}/s, dropped {sum(r['drops'].values()):.0f}, "
                    f"p95 {pct(lat, 95):.0f} ms; gateway CPU {gateway_per_k(r)}"
                )
            best = most_students(results)
            print(
                f"most students at p95 ≤ 250 ms, no stale drops and no request to slow down: {best}"
            )
            if best.get("frames") and best.get("edge"):
                print(f"edge / frames: {best['edge'] / best['frames']:.1f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
