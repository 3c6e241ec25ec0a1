"""The gateway rides out a Redis restart without restarting: frames are refused as redis_down
(counted, the page told at once) while it is away, accepted again once it is back, and the live
hub resubscribes so dashboards and self-views get updates again."""

from __future__ import annotations

import time

import pytest
import redis

from classpulse import contracts
from tests import chaos
from tests.gateway_helpers import (
    JPEG,
    joined_session,
    next_json,
    student_update,
    token_protocols,
)


@pytest.fixture
def private_redis(tmp_path):
    server = chaos.PrivateRedis(tmp_path / "redis").start()
    yield server
    server.stop()


def test_gateway_survives_a_redis_restart(settings, private_redis):
    settings = settings.model_copy(update={"redis_url": private_redis.url, "frame_max_fps": 50.0})
    with joined_session(settings) as (client, _, session, student):
        with client.websocket_connect(
            "/ws/student", subprotocols=token_protocols(student["token"])
        ) as ws:
            ws.receive_json()
            ws.send_bytes(JPEG)
            assert next_json(ws, lambda m: m["type"] == "ack")["ok"] is True

            private_redis.kill()
            ws.send_bytes(JPEG)
            ack = next_json(ws, lambda m: m["type"] == "ack")
            assert ack == {"type": "ack", "seq": 2, "ok": False, "reason": "redis_down"}

            private_redis.start()  # same port, same AOF: the stream is back
            deadline, ok = time.time() + 15, False
            while not ok and time.time() < deadline:
                time.sleep(0.3)
                ws.send_bytes(JPEG)
                ok = next_json(ws, lambda m: m["type"] == "ack")["ok"]
            assert ok, "frames not accepted again after Redis came back"

            # The hub resubscribed: an update published now reaches this student's page.
            r = redis.Redis.from_url(private_redis.url)
            update = student_update(session, student, emotion="happy")
            channel = contracts.live_channel(session["id"])  # this session's, by the open socket
            chaos.wait_for(
                lambda: dict(r.pubsub_numsub(channel)).get(channel.encode(), 0) > 0,
                20,
                "hub resubscribed",
            )
            r.publish(contracts.live_channel(session["id"]), contracts.encoder.encode(update))
            got = next_json(ws, lambda m: m["type"] == "self" and m.get("emotion") == "happy")
            assert got["student_id"] == student["student_id"]
        frames = r.xrange(contracts.FRAMES_STREAM)
        assert len(frames) >= 2  # the one before the restart survived it (AOF), and the new ones
        assert "redis_down" in client.get("/metrics").text
