"""Live fan-out at class size: does a teacher's browser with a full class keep up, and what does
the gateway pay per update it relays?

    .venv/bin/python bench/live_fanout.py                       # 40 students at 2, 5 and 10 updates/s each
    .venv/bin/python bench/live_fanout.py --students 40 --rates 2,5 --seconds 10

Starts `classpulse run` (embedded PostgreSQL, the machine's Redis on database 11 by default, so
this process can publish into it), makes a teacher and a session of N joined students, opens the
real dashboard in headless Chromium, then publishes each student's LiveUpdate on the session's
live channel at the given rate, as the aggregator does (every update a whole state of one
student). Prints per rate: updates published per second, updates the page handled per second,
the page's time in its socket handler (share of the wall clock), publish → handled delay
(p50/p95), and the gateway's CPU per published update. The page is measured by wrapping
WebSocket.onmessage before the dashboard's code runs; nothing in the product is changed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classpulse import contracts as c  # noqa: E402
from classpulse.cli.devserver import DevServer  # noqa: E402
from tests.browser import TEACHER, chromium, create_teacher, teacher_logged_in  # noqa: E402

# Counts the dashboard's socket messages, the time its handler takes and the delay since each
# update's publish time ``t`` (same machine, same clock).
PROBE = """
(() => {
  const Native = window.WebSocket;
  const probe = (window.__fanout = { n: 0, busyMs: 0, delays: [] });
  class Probed extends Native {
    set onmessage(fn) {
      super.onmessage = (event) => {
        const start = performance.now();
        fn.call(this, event);
        probe.busyMs += performance.now() - start;
        probe.n += 1;
        try {
          const t = JSON.parse(event.data).t;
          if (typeof t === "number") probe.delays.push(Date.now() - t * 1000);
        } catch (e) { /* not JSON: a pong */ }
      };
    }
    get onmessage() { return super.onmessage; }
  }
  window.WebSocket = Probed;
})();
"""
LOAD_ENV = {
    "CLASSPULSE_JOINS_PER_MINUTE_PER_ADDRESS": "100000",
    "CLASSPULSE_JOINS_PER_MINUTE_PER_SESSION": "100000",
}


def gateway_cpu(server: DevServer) -> float:
    root = psutil.Process(server.proc.pid)
    total = 0.0
    for p in root.children(recursive=True):
        if " ".join(p.cmdline()).endswith("classpulse gateway"):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else float("nan")


def run_rate(r: redis.Redis, page, server, session, students, rate: float, seconds: float) -> dict:
    page.evaluate("() => { const p = window.__fanout; p.n = 0; p.busyMs = 0; p.delays = []; }")
    channel = c.live_channel(session["id"])
    probs = {"happy": 0.7, "neutral": 0.2, "sad": 0.1}
    cpu0, start = gateway_cpu(server), time.monotonic()
    published, tick = 0, 1.0 / rate
    next_at = start
    while time.monotonic() - start < seconds:
        pipe = r.pipeline(transaction=False)
        for k, s in enumerate(students):
            update = c.LiveUpdate(
                type="student",
                session_id=session["id"],
                student_id=s["student_id"],
                t=time.time(),
                emotion="happy",
                confidence=0.7,
                probs=probs,
                faces=1,
                frames=published + k,
                display_name=f"Student {k + 1}",
            )
            pipe.publish(channel, c.encoder.encode(update))
        pipe.execute()
        published += len(students)
        next_at += tick
        time.sleep(max(0.0, next_at - time.monotonic()))
    wall = time.monotonic() - start
    time.sleep(1.0)  # the last updates reach the page
    cpu = gateway_cpu(server) - cpu0
    got = page.evaluate("() => window.__fanout")
    return {
        "rate": rate,
        "published_per_s": published / wall,
        "handled_per_s": got["n"] / wall,
        "busy": got["busyMs"] / 1000 / wall,
        "p50": pct(got["delays"], 50),
        "p95": pct(got["delays"], 95),
        "gateway_us": cpu / max(1, published) * 1e6,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--students", type=int, default=40)
    ap.add_argument("--rates", default="2,5,10", help="updates per second per student")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/11")
    args = ap.parse_args()
    r = redis.Redis.from_url(args.redis)
    r.flushdb()
    with (
        tempfile.TemporaryDirectory(prefix="cp-fanout-") as tmp,
        DevServer(Path(tmp), redis_url=args.redis, env=LOAD_ENV) as server,
        chromium() as browser,
    ):
        create_teacher(server, server.login())
        token = server.login(*TEACHER)
        session = server.api("POST", "/api/sessions", {"title": "Fan-out"}, token)
        students = [
            server.api(
                "POST",
                f"/api/join/{session['join_code']}",
                {"display_name": f"Student {i + 1}", "consent": True},
            )
            for i in range(args.students)
        ]
        page = teacher_logged_in(browser, server)
        page.add_init_script(PROBE)
        page.goto(f"{server.base}/sessions/{session['id']}")
        # The snapshot arrived: the socket is open and its hub subscription confirmed.
        page.wait_for_function("() => window.__fanout && window.__fanout.n >= 1", timeout=60_000)
        print(f"{args.students} students, one dashboard in headless Chromium; load {_load()}")
        print(
            "rate/student  published/s  handled/s  page busy  delay p50/p95 ms  gateway µs/update"
        )
        for rate in (float(x) for x in args.rates.split(",")):
            m = run_rate(r, page, server, session, students, rate, args.seconds)
            print(
                f"{m['rate']:>12g}  {m['published_per_s']:>11.0f}  {m['handled_per_s']:>9.0f}  "
                f"{m['busy']:>8.1%}  {m['p50']:>7.0f} / {m['p95']:<7.0f}  {m['gateway_us']:>10.0f}"
            )
        tiles = page.locator("[data-student-id]").count()
        print(f"tiles on the dashboard: {tiles}; load {_load()}")
    r.flushdb()
    return 0


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


if __name__ == "__main__":
    sys.exit(main())
