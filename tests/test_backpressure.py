"""Backpressure made visible: the gateway lowers (and raises again) the pages' frame rate from the
workers' lag, tells a page over the cap to slow down, and counts frames per student (captured,
sent, accepted, processed, dropped by reason) for /metrics, the API and the dashboard."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from app.frame_flow import MIN_FPS, FrameFlow
from classpulse import contracts
from tests.gateway_helpers import (
    JPEG,
    PNG,
    bearer,
    joined_session,
    make_user,
    next_json,
    token_protocols,
)


def test_target_rate_halves_under_lag_and_recovers_in_steps(settings):
    stats = FrameFlow(redis=None, settings=settings)  # type: ignore[arg-type]
    assert (stats.fps, stats.reason) == (2.0, "normal")
    high, low = settings.frame_max_age_ms / 2, 0.0
    rates = []
    for lag in [high] * 8:
        stats.step(lag, 0)
        rates.append(stats.fps)
    # Halved, then held two ticks (the lag trails the change), never below the floor.
    assert rates == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5] and MIN_FPS == 0.5
    assert stats.reason == "backlog"
    for _ in range(3):
        stats.step(settings.frame_max_age_ms / 7, 0)  # between the thresholds: hold
    assert stats.fps == 0.5
    rates = []
    for _ in range(30):
        stats.step(low, 0)
        rates.append(stats.fps)
    assert rates[2] == 0.75 and rates[-1] == 2.0 and sorted(rates) == rates  # +0.25 after calm
    assert stats.reason == "normal"
    stats.step(0, 5000)  # this gateway's own frame writer queueing up counts too
    assert stats.fps == 1.0


def _rate(ws):
    return next_json(ws, lambda m: m["type"] == "rate", limit=200)


def test_page_is_told_to_slow_down_and_speed_up_again(settings, clean_redis, monkeypatch):
    monkeypatch.setattr("app.frame_flow.TICK_S", 0.2)  # five control ticks a second
    with (
        joined_session(settings) as (client, _, _, student),
        client.websocket_connect(
            "/ws/student", subprotocols=token_protocols(student["token"])
        ) as ws,
    ):
        assert ws.receive_json()["fps"] == 2.0
        # A worker reports that the frames it reads are 1.8 s old (the limit is 2 s).
        clean_redis.hset(contracts.WORKER_LAG_KEY, "worker-x", f"1800 {time.time():.1f}")
        time.sleep(0.5)  # a tick of the gateway's poll
        ws.send_bytes(JPEG)
        assert _rate(ws) == {"type": "rate", "fps": 1.0, "reason": "backlog"}
        fps = 1.0
        deadline = time.time() + 12
        clean_redis.hset(contracts.WORKER_LAG_KEY, "worker-x", f"10 {time.time():.1f}")
        while fps < 2.0 and time.time() < deadline:
            time.sleep(0.2)
            ws.send_bytes(JPEG)
            msg = next_json(ws, lambda m: m["type"] in ("rate", "ack"), limit=200)
            if msg["type"] == "rate":
                fps = msg["fps"]
        assert fps == 2.0 and msg["reason"] == "normal"


def test_page_over_the_cap_is_told_its_rate(settings, clean_redis):
    settings = settings.model_copy(update={"frame_max_fps": 1.0, "frames_in_flight": 1})
    with (
        joined_session(settings) as (client, _, _, student),
        client.websocket_connect(
            "/ws/student", subprotocols=token_protocols(student["token"])
        ) as ws,
    ):
        ws.receive_json()
        for _ in range(4):
            ws.send_bytes(JPEG)
        assert _rate(ws) == {"type": "rate", "fps": 1.0, "reason": "rate_limited"}


def test_frames_are_counted_per_student_and_in_metrics(settings, clean_redis):
    with joined_session(settings, "Ada", teacher="a@school.example") as joined:
        client, headers, session, ada = joined
        b = make_user(settings, "b@school.example")
        with client.websocket_connect(
            "/ws/student", subprotocols=token_protocols(ada["token"])
        ) as ws:
            ws.receive_json()
            ws.send_text('{"type": "stats", "captured": 5}')
            ws.send_text('{"type": "stats", "captured": -3}')  # refused, not counted
            assert "captured" in next_json(ws, lambda m: m["type"] == "error")["message"]
            for frame in (JPEG, JPEG, PNG, b""):
                ws.send_bytes(frame)
            acks = [next_json(ws, lambda m: m["type"] == "ack") for _ in range(4)]
            acks.sort(key=lambda x: x["seq"])  # refusals are acked at once, writes after Redis
            assert [x["ok"] for x in acks] == [True, True, False, False]
        # The worker's side of the same hash, as the worker writes it.
        key = contracts.stream_stats_key(session["id"])
        clean_redis.hincrby(key, f"{ada['student_id']}:processed", 2)
        clean_redis.hincrby(key, f"{ada['student_id']}:dropped.stale", 1)
        clean_redis.hset(
            contracts.STATS_KEY, mapping={"worker.processed": 2, "worker.dropped.stale": 1}
        )
        url = f"/api/sessions/{session['id']}/stream-stats"
        deadline = time.time() + 5
        while time.time() < deadline:  # the socket's last counts are flushed when it closes
            body = client.get(url, headers=headers).json()
            if body["students"].get(ada["student_id"], {}).get("received") == 4:
                break
            time.sleep(0.1)
        assert body["target_fps"] == 2.0 and body["pressure"] == "normal"
        assert body["students"][ada["student_id"]] == {
            "captured": 5,
            "received": 4,
            "accepted": 2,
            "processed": 2,
            "dropped": {"not_jpeg": 2, "stale": 1},
            "capture": None,
            "detector_ms": None,
            "fallback": None,
        }
        # Another teacher sees nothing of it.
        other = client.get(url, headers=bearer(settings, b))
        assert other.status_code == 404 and other.json() == {"detail": "session not found"}

        families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
        dropped = {
            s.labels["reason"]: s.value
            for s in families["classpulse_frames_dropped"].samples
            if s.name.endswith("_total")
        }
        assert dropped["not_jpeg"] == 2 and dropped["stale"] == 1  # gateway and worker reasons
        assert families["classpulse_frames_received"].samples[0].value == 4
        assert families["classpulse_frames_captured"].samples[0].value == 5
        processed = [s.value for s in families["classpulse_frames_processed"].samples]
        assert processed == [2.0]
        assert families["classpulse_target_fps"].samples[0].value == 2.0
        # No per-student label anywhere in Prometheus (cardinality).
        assert ada["student_id"] not in client.get("/metrics").text
