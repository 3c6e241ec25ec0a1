"""Live fan-out at class size: a socket that falls behind gets each student's newest state once.

The hub keys a student's update by its kind and student; a socket's queue keeps only the newest
of a key still waiting, so a slow dashboard (or a gateway too busy to send) never sends a state
that is already superseded, and the number of items waiting is bounded by the class, not by how
far behind it fell. Alerts, acks and session news are never merged.
"""

from __future__ import annotations

import asyncio

import msgspec

from app.hub import DropOldestQueue, Hub
from classpulse import contracts as c


def _update(student: str, frames: int, kind: str = "student") -> bytes:
    return c.encoder.encode(
        c.LiveUpdate(
            type=kind, session_id="s", student_id=student, t=float(frames), faces=1, frames=frames
        )
    )


def _drain(queue: DropOldestQueue) -> list[dict]:
    out = []
    while not queue.empty():
        out.append(msgspec.json.decode(queue.get_nowait()))
    return out


def test_a_dashboard_that_falls_behind_gets_each_students_newest_state_once():
    hub = Hub(None, mode=lambda: "per_student")  # type: ignore[arg-type]  # dispatch only
    dashboard = DropOldestQueue(512)
    channel = c.live_channel("s").encode()
    with hub.subscribe("s", dashboard):
        for frame in range(1, 11):  # 40 students, 10 updates each, nothing sent meanwhile
            for k in range(40):
                hub.dispatch(channel, _update(f"u{k}", frame))
        hub.dispatch(channel, _update("u0", 11, kind="presence"))
        alert = {"type": "alert", "audience": "teachers", "session_id": "s", "t": 1.0}
        hub.dispatch(channel, c.encoder.encode({**alert, "student_id": "u1"}))
        hub.dispatch(channel, c.encoder.encode({**alert, "student_id": "u1"}))
        got = _drain(dashboard)
    students = [m for m in got if m["type"] == "student"]
    assert sorted(m["student_id"] for m in students) == sorted(f"u{k}" for k in range(40))
    assert all(m["frames"] == 10 for m in students)  # the newest, not the first
    assert [m["type"] for m in got].count("presence") == 1  # a kind of its own: not merged away
    assert [m["type"] for m in got].count("alert") == 2  # news is never merged
    assert dashboard.merged == 40 * 9


def test_merged_updates_keep_the_order_of_their_newest_arrival():
    queue = DropOldestQueue(8)
    queue.push(b"a1", ("student", "a"))
    queue.push(b"news")
    queue.push(b"a2", ("student", "a"))  # moves behind the news: the newer state comes later
    assert [queue.get_nowait() for _ in range(queue.qsize())] == [b"news", b"a2"]


def test_a_full_queue_drops_its_oldest_item_and_says_so():
    queue = DropOldestQueue(3)
    assert not any(queue.push(f"m{i}") for i in range(3))
    assert queue.full() and queue.push("m3") is True
    assert [queue.get_nowait() for _ in range(3)] == ["m1", "m2", "m3"]


def test_the_send_loop_wakes_for_an_item_pushed_while_it_waits():
    async def scenario() -> list[bytes | str]:
        queue = DropOldestQueue(4)
        waiting = asyncio.ensure_future(queue.get())
        await asyncio.sleep(0)
        assert not waiting.done()
        queue.push(b"x", ("student", "u"))
        queue.push(b"y", ("student", "u"))  # merged before the consumer ran: only y is sent
        first = await asyncio.wait_for(waiting, 1)
        queue.push(b"z")
        return [first, await asyncio.wait_for(queue.get(), 1)]

    assert asyncio.run(scenario()) == [b"y", b"z"]


def test_a_student_page_gets_only_its_own_newest_state():
    hub = Hub(None, mode=lambda: "per_student")  # type: ignore[arg-type]
    dashboard, page = DropOldestQueue(64), DropOldestQueue(64)
    channel = c.live_channel("s").encode()
    with hub.subscribe("s", dashboard), hub.subscribe("s", page, "u1"):
        for frame in range(1, 6):
            hub.dispatch(channel, _update("u1", frame))
            hub.dispatch(channel, _update("u2", frame))
    own = _drain(page)
    assert [(m["student_id"], m["frames"]) for m in own] == [("u1", 5)]
    assert len(_drain(dashboard)) == 2
