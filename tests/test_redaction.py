"""What a view may show under each mode (``classpulse.views``): ``quality`` is part of the
per-student estimate, the live hub withholds estimates the policy in force forbids, and a walk
of every route and socket of the app finds no student's estimate outside ``per_student`` and no
attention field ("facing the screen") while the policy does not observe attention, whatever the
mode (a new route is walked as soon as the app serves it)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from typing import Any

import anyio
import msgspec
import psycopg
import pytest
from starlette.websockets import WebSocketDisconnect

from app.hub import DropOldestQueue, Hub
from classpulse import contracts as c
from classpulse import views
from classpulse.policy import Policy
from classpulse.settings import Settings
from records.reports import CSV_ATTENTION
from tests.access_helpers import (
    ACCESS,
    ADMIN,
    STUDENT_A,
    TEACHER_A,
    Call,
    _value,
    build_world,
    call_route,
    concrete_path,
    route_keys,
)
from tests.gateway_helpers import client_for, student_update, token_protocols
from tests.privacy_helpers import Pipeline, send_frames
from tests.redaction_helpers import csv_estimates_in, estimates_in
from worker.pipeline import FramePipeline


def _update(**fields) -> c.LiveUpdate:
    return c.LiveUpdate(type="student", session_id="s", student_id="u", t=0.0, **fields)


# --- 5. quality is part of the per-student estimate ----------------------------------------------
def test_quality_is_redacted_outside_per_student():
    for mode in ("aggregate_only", "off"):
        update = _update(
            emotion="uncertain",
            confidence=0.3,
            probs={"happy": 0.3},
            quality="face_too_small",
            faces=1,
        )
        out = views.redact_update(update, mode)
        assert (out.emotion, out.confidence, out.probs, out.quality) == (None, None, None, None)
        shown = views.update_view(
            {"emotion": "uncertain", "quality": "few_frames", "faces": 1}, Policy(mode)
        )
        assert shown is not None and shown["quality"] is None and shown["faces"] == 1
    kept = views.redact_update(_update(quality="few_frames"), "per_student")
    assert kept.quality == "few_frames"


def test_each_view_withholds_its_estimate_fields_and_keeps_its_shape():
    point = {"frames": 3, "frames_with_face": 2, "probs": {"sad": 1.0}, "dominant": "sad"}
    assert views.student_view("bucket", point, "per_student") is point
    for mode in ("aggregate_only", "off", None, "garbled"):  # unknown counts as off
        hidden = views.student_view("bucket", point, mode)
        assert hidden == {"frames": 3, "frames_with_face": 2, "probs": None, "dominant": None}
        assert point["probs"] == {"sad": 1.0}  # the stored data is not changed


def test_class_mix_needs_a_big_enough_group_outside_per_student():
    assert views.shows_class(Policy("per_student", 5), 1)
    assert not views.shows_class(Policy("aggregate_only", 5), 4)
    assert views.shows_class(Policy("aggregate_only", 5), 5)
    assert not views.shows_class(Policy("off", 1), 100)


def test_the_hub_withholds_estimates_the_policy_in_force_forbids():
    mode = ["aggregate_only"]
    hub = Hub(None, mode=lambda: mode[0])  # type: ignore[arg-type]  # dispatch only
    teacher, student = DropOldestQueue(8), DropOldestQueue(8)
    leaky = c.encoder.encode(_update(emotion="sad", confidence=0.9, probs={"sad": 0.9}, faces=1))
    plain = c.encoder.encode(_update(faces=1))
    with hub.subscribe("s", teacher), hub.subscribe("s", student, "u"):
        hub.dispatch(c.live_channel("s").encode(), leaky)
        for queue in (teacher, student):
            got = msgspec.json.decode(queue.get_nowait())
            assert got["faces"] == 1 and not views.carries_estimate(got)
        hub.dispatch(c.live_channel("s").encode(), plain)
        for queue in (teacher, student):
            assert queue.get_nowait() is plain  # nothing to withhold: passed on as is
        mode[0] = "per_student"
        hub.dispatch(c.live_channel("s").encode(), leaky)
        assert teacher.get_nowait() is leaky and student.get_nowait() is leaky


# --- every route and live message, under each mode --------------------------------------------
# Whoever may see session A's data: its teacher, an admin, and A's student (their own view).
READERS = (TEACHER_A, ADMIN, STUDENT_A)
# Calls the walk makes itself (the policy) or that change what the rest of the walk would see.
NOT_WALKED = {("PUT", "/api/admin/policy")}
LIVE_MARK = 1234567.5  # the ``t`` of the update the walk publishes on A's live channel


def attention_in(body: Any) -> list[str]:
    """Where a JSON answer or message shows attention: a field of ``views.ATTENTION_KEYS``
    holding a value, a boolean or a number (``facing`` False included; not a schema's
    description of the field), about a student or the class."""
    found: list[str] = []

    def walk(x: Any, where: str) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                if k in views.ATTENTION_KEYS and isinstance(v, bool | int | float):
                    found.append(f"{where}.{k}={json.dumps(v)[:60]}")
                else:
                    walk(v, f"{where}.{k}")
        elif isinstance(x, list):
            for i, v in enumerate(x):
                walk(v, f"{where}[{i}]")

    walk(body, "$")
    return found


def csv_attention_in(text: str) -> list[str]:
    """The attention columns a CSV report has (none while attention is not observed)."""
    header = next(csv.reader(io.StringIO(text)), [])
    return [f"column {name}" for name in header if name in CSV_ATTENTION]


def shown_in(body: Any, about_student: bool = False) -> list[str]:
    """Estimates and attention a JSON answer or message shows, each marked with which."""
    return [f"estimate {e}" for e in estimates_in(body, about_student)] + [
        f"attention {a}" for a in attention_in(body)
    ]


def _format_param(route: Any) -> str | None:
    """The name of a route's query parameter that picks a download format, if it has one."""
    for param in getattr(getattr(route, "dependant", None), "query_params", ()):
        if param.alias == "format":
            return "format"
    return None


def _receive_within(ws: Any, seconds: float) -> dict[str, Any] | None:
    """The socket's next JSON message, or None after ``seconds`` (the test client's receive
    waits forever, and a socket that relays no live update would never answer)."""

    async def get() -> Any:
        with anyio.move_on_after(seconds):
            return await ws._send_rx.receive()
        return None

    message = ws.portal.call(get)
    if not message or message.get("type") != "websocket.send":
        return None
    return json.loads(message.get("text") or message.get("bytes") or "null")


def walk_sockets(client: Any, w: Any, r: Any, key: tuple[str, str], who: str) -> list[str]:
    """Connect as ``who``; the first message, then what arrives after an update carrying a
    full estimate of A's student is published on A's live channel (as an aggregator that had
    not yet seen a stricter policy would publish it)."""
    token = w.tokens[who]
    path = concrete_path(key[1], ACCESS.get(key, Call("public", "?")), w)
    messages = []
    with client.websocket_connect(path, subprotocols=token_protocols(token or "")) as ws:
        try:
            messages.append(ws.receive_json())
        except WebSocketDisconnect:  # not this caller's socket: refused, nothing shown
            return []
        leaky = student_update(
            w.a,
            w.students["A"],
            t=LIVE_MARK,
            emotion="sad",
            confidence=0.91,
            probs={"sad": 0.91, "happy": 0.09},
            quality="few_frames",
            faces=1,
            facing=False,
            facing_share=0.5,
            away_s=3.0,
        )
        r.publish(c.live_channel(w.a["id"]), c.encoder.encode(leaky))
        for _ in range(20):
            msg = _receive_within(ws, 2.0)
            if msg is None:
                break
            messages.append(msg)
            if msg.get("t") == LIVE_MARK:
                break
    return [
        f"{e} in message {i} ({m.get('type')})" for i, m in enumerate(messages) for e in shown_in(m)
    ]


def walk_app(client: Any, w: Any, r: Any) -> dict[str, list[str]]:
    """Every route of the app (a row of the access matrix says how to call it; a route without
    one is called plainly) as each reader of A: the estimates and attention each answer shows
    (``shown_in``: each marked "estimate" or "attention")."""
    found: dict[str, list[str]] = {}
    for key, route in sorted(route_keys(client.app).items()):
        call = ACCESS.get(key, Call("public", 200))
        if call.fresh or key in NOT_WALKED:
            continue
        for who in READERS:
            where = f"{who} {key[0]} {key[1]}"
            if key[0] == "WS":
                found[where] = walk_sockets(client, w, r, key, who)
                continue
            path = concrete_path(key[1], call, w)
            got = call_route(client, key[0], path, call, who, w)
            # A student's answers are about that student, and so is a route naming one in its
            # path: an estimate anywhere in them is a student's, with or without a student_id.
            about_student = who == STUDENT_A or "student" in key[1]
            found[where] = shown_in(got.body, about_student)
            if (name := _format_param(route)) and got.code == 200:
                params = {**(_value(call.params, w) or {}), name: "csv"}
                csv_call = replace(call, params=params)
                text = call_route(client, key[0], path, csv_call, who, w).text
                found[where + " (csv)"] = [
                    *(f"estimate {e}" for e in csv_estimates_in(text)),
                    *(f"attention {a}" for a in csv_attention_in(text)),
                ]
    return found


@pytest.fixture(scope="module")
def model() -> FramePipeline:
    return FramePipeline.from_settings(Settings(providers=["cpu"]))


def _store_attention(settings: Settings) -> None:
    """Attention in the stored buckets, as if observed (whatever the worker made of the test's
    frames): every faced frame observed, half of them facing the screen."""
    with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
        for table in ("emotion_buckets", "class_buckets"):
            conn.execute(
                f"UPDATE {table} SET attention_frames = frames_with_face,"  # noqa: S608
                " facing_frames = frames_with_face / 2"
            )


# Each mode with attention off, then on: off walks first, so a looser walk cannot leave data
# behind that a stricter one would then be blamed for (the stored data is the same throughout).
WALKS = [
    (mode, attention)
    for attention in (False, True)
    for mode in ("per_student", "aggregate_only", "off")
]


def test_no_route_or_live_message_shows_a_student_estimate_outside_per_student(
    settings, clean_redis, model
):
    """Estimates and attention stored and published under the loosest policy (buckets, the
    snapshot hash, a live update): under each mode with attention off and on, no answer of any
    route and no message of any socket, whoever asks, shows an estimate outside
    ``per_student`` or attention while it is off (so none of ``off`` + attention's answers
    holds an emotion); where they are allowed the walk sees them (it is not looking in the
    wrong place)."""
    settings = settings.model_copy(update={"joins_per_minute_per_session": 100_000})
    pipe = Pipeline(settings, clean_redis, model)
    clean_redis.set(c.WORKER_HEARTBEAT_PREFIX + "redaction-walk", "1", ex=600)
    try:
        with client_for(settings) as client:
            w = build_world(client, settings)
            admin = w.headers[ADMIN]
            send_frames(client, w.students["A"]["token"], 2)
            assert pipe.run() >= 1  # stored under per_student: estimates in the buckets
            _store_attention(settings)
            leaks: list[str] = []
            for mode, attention in WALKS:
                body = {"emotion_mode": mode, "min_group_size": 1, "attention": attention}
                r = client.put("/api/admin/policy", json=body, headers=admin)
                assert r.status_code == 200, r.text
                found = walk_app(client, w, clean_redis)
                r = client.get("/api/admin/policy", headers=admin)
                assert r.json()["emotion_mode"] == mode, "a walked route changed the policy"
                assert r.json()["attention"] == attention, "a walked route changed the policy"
                for kind, allowed in (
                    ("estimate", mode == "per_student"),
                    ("attention", attention),
                ):
                    shown = sorted(
                        where
                        for where, places in found.items()
                        if any(p.startswith(kind) for p in places)
                    )
                    if allowed:  # the walk finds them where they are shown
                        parts = ["/live", "/api/student/me", "/ws/student", "/history"]
                        for part in parts:
                            assert any(part in where for where in shown), (mode, kind, part)
                    else:
                        leaks += [
                            f"{mode}, attention {attention}: {where}: "
                            + str([p for p in found[where] if p.startswith(kind)])
                            for where in shown
                        ]
    finally:
        pipe.close()
    assert not leaks, "shown where the policy withholds it:\n  " + "\n  ".join(leaks)
