"""Helpers shared by test modules, moved out of tests/test_edge_capture.py: no test module
imports another (tests/test_layering.py)."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from tests.gateway_helpers import next_json, token_protocols

BOX = (100.0, 40.0, 60.0, 60.0)
KEYPOINTS = [(120, 60), (150, 60), (135, 75), (135, 90), (105, 65), (165, 65)]
FACE = (BOX, 0.9, KEYPOINTS)


def _ack(ws):
    return next_json(ws, lambda m: m["type"] == "ack", limit=200)


def _metrics(client) -> dict[str, dict[tuple, float]]:
    """Family name -> {label values: value} of the gateway's /metrics (counter totals)."""
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            out.setdefault(family.name, {})[tuple(sorted(s.labels.values()))] = s.value
    return out


def _stream_stats(k, student_id: str, **until: int) -> dict:
    """The student's stream stats, once they reach ``until`` (the socket's last counts are
    flushed when it closes) or after 5 s."""
    url = f"/api/sessions/{k.session['id']}/stream-stats"
    deadline = time.time() + 5
    while True:
        me = k.client.get(url, headers=k.teacher).json()["students"].get(student_id, {})
        if all(me.get(name) == n for name, n in until.items()) or time.time() > deadline:
            return me
        time.sleep(0.1)


def _student(client, token):
    return client.websocket_connect("/ws/student", subprotocols=token_protocols(token))


def _send(client, token: str, payloads: list[bytes]) -> list[dict]:
    """Send binary messages over one student socket; their acks, in order."""
    with _student(client, token) as ws:
        ws.receive_json()  # config
        acks = []
        for data in payloads:
            ws.send_bytes(data)
            acks.append(_ack(ws))
    return acks
