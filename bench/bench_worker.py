"""Worker benchmark: frames/s through the real worker loop against the sum of its bare stages.

    .venv/bin/python bench/bench_worker.py [--frames 2000] [--redis-url redis://127.0.0.1:6379/15]
    .venv/bin/python bench/bench_worker.py --capture edge   # faces messages (edge capture) too
    .venv/bin/python bench/bench_worker.py --capture edge --compare HEAD~3   # old code vs new

Stages measured alone on the same frames: JPEG decode, then the inference pipeline (detect,
crop, classify every face of a batch in one call) on batches of the worker's batch size. Then
the real InferenceWorker drains the same frames from a Redis stream (its own read: XREADGROUP,
then process_safely: decode, pipeline, result encoding, XADD results + XACK in one MULTI/EXEC,
counters). The ratio is the overhead of queues and serialisation our worker adds. One inference
thread, like a worker process per core. The Redis database given is flushed.

With ``--capture edge`` the worker also drains the faces messages pages would send for the same
frames (boxes and packed crops, made once by the worker's own detector and crop code), which skip
decode and detection: the ratio edge/frames is what edge capture saves per worker core.

The machine is shared: every figure is printed with the load average (1, 5, 15 min) at its start
and end. ``--compare REF`` runs the worker loop of the code at git REF (exported to a temporary
folder: classpulse/, worker/, tests/, models/) and of the working tree in alternating child
processes, ``--rounds`` each, on the same messages, and prints both and their ratio: the only
figures comparable on a busy box. ``--students N`` spreads the messages over N students of one
session (their per-student counters, as in a class), default 1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SESSION = b"00000000-0000-0000-0000-000000000001"


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def frames(n: int) -> list[bytes]:
    """Webcam-like 320×240 JPEGs of a face at slightly different places and sizes."""
    import cv2
    import numpy as np
    from skimage import data as skdata

    face = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)[0:400, 60:460]
    out = []
    for i in range(16):
        side = 170 + 4 * i
        frame = np.full((240, 320, 3), 100, np.uint8)
        x, y = 5 * i, 240 - side
        frame[y:, x : x + side] = cv2.resize(face, (side, side))
        out.append(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 70])[1].tobytes())
    return [out[i % len(out)] for i in range(n)]


class Bench:
    """The worker loop and the bare stages, on the code that ``sys.path`` finds first."""

    def __init__(self, args: argparse.Namespace) -> None:
        import redis

        from classpulse.settings import Settings
        from worker.pipeline import FramePipeline

        self.args = args
        self.settings = Settings(
            redis_url=args.redis_url, providers=["cpu"], frame_max_age_ms=10**9
        )
        self.pipeline = FramePipeline.from_settings(self.settings)
        self.jpegs = frames(args.frames)
        self.batch = self.settings.worker_batch_size or 32
        self.r = redis.Redis.from_url(args.redis_url)
        # CPU seconds spent in the classifier (ONNX Runtime runs it on this thread): the rest of
        # a worker run's CPU is the worker's own overhead per message.
        self.classify_cpu = 0.0
        clf = self.pipeline.classifier
        if clf is not None:
            classify = clf.classify_crops

            def timed(crops):  # type: ignore[no-untyped-def]
                t0 = time.process_time()
                try:
                    return classify(crops)
                finally:
                    self.classify_cpu += time.process_time() - t0

            clf.classify_crops = timed  # type: ignore[method-assign]

    def messages(self) -> list[bytes]:
        from tests.edge_helpers import faces_message

        unique = [faces_message(self.pipeline, j) for j in self.jpegs[:16]]
        return [unique[i % len(unique)] for i in range(len(self.jpegs))]

    def stages(self) -> float:
        from worker.pipeline import decode_jpeg

        t0 = time.perf_counter()
        for i in range(0, len(self.jpegs), self.batch):
            images = [decode_jpeg(j) for j in self.jpegs[i : i + self.batch]]
            self.pipeline.analyze(images)
        return time.perf_counter() - t0

    def worker_run(self, payloads: list[bytes], kind: bytes) -> tuple[float, float, float]:
        """Seconds for a fresh InferenceWorker to drain ``payloads`` through its real loop: wall
        clock, this process's CPU time (what a worker core pays, less sensitive than the wall
        clock to the other processes of a busy box; Redis's own time is not in it) and the part
        of it spent in the classifier."""
        from classpulse import contracts as c
        from worker.service import InferenceWorker

        field = c.F_FACES if kind == c.KIND_FACES else c.F_JPEG
        r = self.r
        r.flushdb()
        worker = InferenceWorker(self.settings, r, self.pipeline)
        worker.setup()
        pipe = r.pipeline(transaction=False)
        now = str(time.time() * 1000).encode()
        students = [f"00000000-0000-0000-0001-{k:012d}".encode() for k in range(self.args.students)]
        for i, payload in enumerate(payloads):
            pipe.xadd(
                c.FRAMES_STREAM,
                {
                    c.F_VERSION: b"1",
                    c.F_SESSION: SESSION,
                    c.F_STUDENT: students[i % len(students)],
                    c.F_SEQ: str(i).encode(),
                    c.F_RECEIVED_MS: now,
                    c.F_EMOTION: b"1",
                    c.F_KIND: kind,
                    field: payload,
                },
            )
        pipe.execute()
        t0, cpu0, clf0 = time.perf_counter(), time.process_time(), self.classify_cpu
        done = 0
        while done < len(payloads):
            parts = worker.read()
            done += worker.process_safely(parts) if parts else 0
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        assert r.xlen(c.RESULTS_STREAM) == len(payloads)
        return elapsed, cpu, self.classify_cpu - clf0


def child(args: argparse.Namespace) -> int:
    """One measurement for ``--compare``: the best of ``--rounds`` runs, as JSON."""
    from classpulse import contracts as c

    bench = Bench(args)
    if args.child == "edge":
        payloads, kind = bench.messages(), c.KIND_FACES
    else:
        payloads, kind = bench.jpegs, c.KIND_FRAME
    runs = [bench.worker_run(payloads, kind) for _ in range(args.rounds)]
    bench.r.flushdb()
    wall, cpu, clf = min(runs), min(runs, key=lambda r: r[1]), min(r[2] for r in runs)
    out = {"n": len(payloads), "seconds": wall[0], "cpu_seconds": cpu[1], "classify_cpu": clf}
    print(json.dumps(out))
    return 0


def export(ref: str, into: Path) -> Path:
    """The code at git ``ref`` that the worker loop needs, extracted under ``into``."""
    paths = ["classpulse", "worker", "tests/__init__.py", "tests/edge_helpers.py", "models"]
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", ref, *paths],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def compare(args: argparse.Namespace) -> int:
    kinds = ["edge"] if args.capture == "edge" else ["frames"]
    if args.capture == "both":
        kinds = ["frames", "edge"]
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp:
        base = export(args.compare, Path(tmp))
        sides = {f"{args.compare} (exported)": base, "working tree": REPO}
        print(f"{load()}  comparing {' vs '.join(sides)}, {args.frames} messages, rounds alternate")
        for kind in kinds:
            runs: dict[str, list[dict[str, float]]] = {label: [] for label in sides}
            for _ in range(args.rounds):
                for label, code in sides.items():
                    out = subprocess.run(
                        [sys.executable, __file__, "--child", kind, "--code", str(code)]
                        + ["--frames", str(args.frames), "--rounds", "1"]
                        + ["--redis-url", args.redis_url, "--students", str(args.students)],
                        check=True,
                        capture_output=True,
                        text=True,
                    )
                    runs[label].append(json.loads(out.stdout.strip().splitlines()[-1]))
            best: dict[str, tuple[float, float]] = {}
            for label, rs in runs.items():
                wall = [r["seconds"] for r in rs]
                cpu = [r["cpu_seconds"] for r in rs]
                rests = [(r["cpu_seconds"] - r["classify_cpu"]) / args.frames * 1e6 for r in rs]
                best[label] = (min(wall), min(cpu))
                print(
                    f"  {kind:6s} {label:22s} wall: best {args.frames / min(wall):7.1f} msg/s, "
                    f"median {args.frames / statistics.median(wall):7.1f}; worker CPU: "
                    f"{min(cpu) / args.frames * 1e6:.0f} µs/msg = "
                    f"{args.frames / min(cpu):7.1f} msg/s per core; outside the classifier "
                    f"best {min(rests):.0f}, median {statistics.median(rests):.0f} µs/msg "
                    f"({len(rs)} rounds)"
                )
            (old_wall, old_cpu), (new_wall, new_cpu) = best.values()
            print(
                f"  {kind:6s} new / old: wall {old_wall / new_wall:.2f}×, "
                f"worker CPU per message {new_cpu / old_cpu:.2f}× ({old_cpu / new_cpu:.2f}× "
                f"the messages per core)   {load()}"
            )
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--capture", choices=("frames", "edge", "both"), default="frames")
    ap.add_argument("--students", type=int, default=1, help="messages spread over N students")
    ap.add_argument("--compare", metavar="REF", help="git ref to compare the working tree with")
    ap.add_argument("--child", choices=("frames", "edge"), help=argparse.SUPPRESS)
    ap.add_argument("--code", help=argparse.SUPPRESS)  # the tree a --child imports from
    args = ap.parse_args()
    sys.path.insert(0, str(Path(args.code).resolve() if args.code else REPO))
    if args.child:
        return child(args)
    if args.compare:
        return compare(args)
    from classpulse import contracts as c

    print(load())
    bench = Bench(args)
    bench.stages()  # warm-up
    pairs = [
        (bench.stages(), bench.worker_run(bench.jpegs, c.KIND_FRAME)) for _ in range(args.rounds)
    ]
    bare = min(p[0] for p in pairs)
    full = min(p[1][0] for p in pairs)
    full_cpu = min(p[1][1] for p in pairs)
    n = len(bench.jpegs)
    providers = bench.pipeline.detector.model.providers
    print(f"{n} frames of 320×240 with one face, batches of {bench.batch}, {providers}")
    print(f"bare stages (decode + pipeline): {n / bare:7.1f} frames/s ({bare / n * 1e3:.3f} ms)")
    print(
        f"real worker loop (Redis in/out): {n / full:7.1f} frames/s ({full / n * 1e3:.3f} ms); "
        f"worker CPU {full_cpu / n * 1e3:.3f} ms/frame"
    )
    print(f"overhead of queues and serialisation: {full / bare:.3f}× ({(full / bare - 1):.1%})")
    print(load())
    if args.capture in ("edge", "both"):
        messages = bench.messages()
        runs = [bench.worker_run(messages, c.KIND_FACES) for _ in range(args.rounds)]
        edge, edge_cpu = min(r[0] for r in runs), min(r[1] for r in runs)
        rest = min(r[1] - r[2] for r in runs)
        print(
            f"real worker loop, faces messages (edge capture, packed crops, "
            f"{sum(map(len, messages)) / n:.0f} B each): {n / edge:7.1f} frames/s "
            f"({edge / n * 1e3:.3f} ms/frame); edge / frames: {full / edge:.1f}×; worker CPU "
            f"{edge_cpu / n * 1e6:.0f} µs/message = {n / edge_cpu:.0f} messages/s per core, of "
            f"which {rest / n * 1e6:.0f} µs outside the classifier"
        )
        print(load())
    bench.r.flushdb()
    return 0


if __name__ == "__main__":
    sys.exit(main())
