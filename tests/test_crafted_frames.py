"""One student's crafted JPEGs stop nobody (security review, second pass).

The attack: a frame whose first bytes ``FF 00`` a naive header walk reads as a marker with a
length while libjpeg skips them as garbage, so the walk sees a small fake frame header and the
decoder, skipping past it inside an APP1 segment, finds the real one: 40000×40000 (the decoder
raises, which killed the worker) or 5000×5000 (it decodes: 75 MB for one frame). The header
reader now accepts only the layout encoders write, the gateway refuses such frames at the door,
and the worker survives any frame that reaches it anyway (an older gateway, a hand-written
stream entry): dropped and counted, never the batch, never the process.
"""

from __future__ import annotations

import asyncio
import json
import time

import cv2
import numpy as np
import psutil
import pytest
import redis
from skimage import data as skdata

from classpulse import contracts as c
from classpulse.jpeg_header import JpegHeaderError, jpeg_size
from tests.browser import TEACHER, create_teacher
from tests.chaos import wait_for
from worker.pipeline import BadFrame, decode_jpeg


def encode(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image)[1].tobytes()


def declaring(jpeg: bytes, w: int, h: int) -> bytes:
    """``jpeg`` with its frame header changed to say w×h."""
    d, i = bytearray(jpeg), 2
    while not (d[i] == 0xFF and d[i + 1] in (0xC0, 0xC2)):
        i += 2 + int.from_bytes(d[i + 2 : i + 4], "big")
    d[i + 5 : i + 7] = h.to_bytes(2, "big")
    d[i + 7 : i + 9] = w.to_bytes(2, "big")
    return bytes(d)


def crafted(w: int, h: int) -> bytes:
    """The review's 66 KB message: SOI, ``FF 00 00 04``, ``FF E1`` whose length bytes are a fake
    16×16 SOF0 (FF C0 = 65,472 bytes for libjpeg), zero padding to offset 65,480, then a real
    JPEG (without its SOI) whose SOF says w×h."""
    small = encode(np.zeros((16, 16, 3), np.uint8))
    i = 2
    while not (small[i] == 0xFF and small[i + 1] == 0xC0):
        i += 2 + int.from_bytes(small[i + 2 : i + 4], "big")
    fake_sof = small[i : i + 2 + int.from_bytes(small[i + 2 : i + 4], "big")]
    head = b"\xff\xd8" + b"\xff\x00\x00\x04" + b"\xff\xe1" + fake_sof
    real = declaring(encode(np.full((16, 16, 3), 128, np.uint8)), w, h)
    return head + b"\x00" * (8 + 0xFFC0 - len(head)) + real[2:]


def face_jpeg() -> bytes:
    image = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)[0:400, 60:460]
    face = cv2.copyMakeBorder(cv2.resize(image, (240, 240)), 0, 0, 40, 40, cv2.BORDER_CONSTANT)
    return encode(face)


def bad_frames() -> dict[str, bytes]:
    good = face_jpeg()
    return {
        "crafted 40000²": crafted(40000, 40000),
        "crafted 5000²": crafted(5000, 5000),
        "declares 5000²": declaring(good, 5000, 5000),
        "truncated": good[: len(good) // 2],
    }


def test_the_decoder_would_have_read_another_size_than_a_naive_walk():
    """The attack is real on this OpenCV: it decodes the crafted 5000² frame in full."""
    image = cv2.imdecode(np.frombuffer(crafted(5000, 5000), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[:2] == (5000, 5000)


@pytest.mark.parametrize("name", list(bad_frames()))
def test_crafted_and_oversized_frames_are_refused_before_decoding(name):
    data = bad_frames()[name]
    with pytest.raises(BadFrame) as exc:
        decode_jpeg(data)
    assert exc.value.reason in ("corrupt", "too_large")


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xd8\xff\xd8" + b"\x00" * 10 + b"\xff\xd9",  # a second SOI
        b"\xff\xd8\xff\xda\x00\x02\xff\xd9",  # a scan before any frame header
        b"\xff\xd8\xff\xc3\x00\x0b\x08\x00\x10\x00\x10\x01\x01\x11\x00\xff\xd9",  # lossless SOF
        b"\xff\xd8\xff\xfe\x00\x01\xff\xd9",  # a segment length under 2
        b"\xff\xd8\xff\xfe\xff\xf0\xff\xd9",  # a segment running past the end
        b"\xff\xd8\xff\xf1\x00\x04\x00\x00\xff\xd9",  # JPG1, which libjpeg does not know
    ],
)
def test_the_header_reader_refuses_what_the_decoder_would_read_differently(data):
    with pytest.raises(JpegHeaderError):
        jpeg_size(data)


def test_two_frame_headers_are_refused():
    good = face_jpeg()
    i = 2
    while not (good[i] == 0xFF and good[i + 1] == 0xC0):
        i += 2 + int.from_bytes(good[i + 2 : i + 4], "big")
    sof = good[i : i + 2 + int.from_bytes(good[i + 2 : i + 4], "big")]
    with pytest.raises(JpegHeaderError):
        jpeg_size(good[:i] + declaring(good, 64, 64)[i : i + len(sof)] + good[i:])


def test_what_encoders_write_is_read_exactly():
    image = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)
    for w, h, flags in [
        (320, 240, []),
        (640, 480, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        (17, 33, []),
    ]:
        data = cv2.imencode(".jpg", cv2.resize(image, (w, h)), flags)[1].tobytes()
        assert jpeg_size(data) == (w, h)
        assert decode_jpeg(data).shape[:2] == (h, w)


def worker_pids(server) -> list[int]:
    children = psutil.Process(server.proc.pid).children(recursive=True)
    return [p.pid for p in children if "worker" in " ".join(p.cmdline())]


@pytest.mark.slow
def test_a_students_crafted_frames_stop_nobody_elses_analysis(server, redis_url):
    import websockets

    create_teacher(server, server.login())
    token = server.login(*TEACHER)
    session = server.api("POST", "/api/sessions", {"title": "Crafted frames"}, token)
    join = f"/api/join/{session['join_code']}"
    ada = server.api("POST", join, {"display_name": "Ada", "consent": True})
    eve = server.api("POST", join, {"display_name": "Eve", "consent": True})
    r = redis.Redis.from_url(redis_url)
    wait_for(lambda: r.hget(c.MODEL_INFO_KEY, "crop_size"), 60, "the worker")
    (pid,) = worker_pids(server)
    bad = list(bad_frames().values())
    good = face_jpeg()
    ws_base = server.base.replace("http://", "ws://")
    seen: dict[str, list[str]] = {"emotions": [], "eve_refused": []}

    async def student(tok: str, payloads: list[bytes], seconds: float, refused: list | None):
        async with websockets.connect(
            ws_base + "/ws/student",
            additional_headers={"Authorization": "Bearer " + tok},
            compression=None,
            max_size=2**22,
        ) as ws:
            json.loads(await ws.recv())  # config
            until, k = time.monotonic() + seconds, 0
            while time.monotonic() < until:
                await ws.send(payloads[k % len(payloads)])
                k += 1
                deadline = time.monotonic() + 2
                while time.monotonic() < deadline:  # one frame in flight: wait for its ack
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 2))
                    if msg.get("type") == "ack":
                        if not msg.get("ok") and refused is not None:
                            refused.append(msg.get("reason"))
                        break
                await asyncio.sleep(0.25)

    async def teacher(seconds: float):
        async with websockets.connect(
            ws_base + f"/ws/sessions/{session['id']}/live",
            additional_headers={"Authorization": "Bearer " + token},
            max_size=2**24,
        ) as ws:
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                try:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                except TimeoutError:
                    continue
                if msg.get("student_id") == ada["student_id"] and msg.get("emotion"):
                    seen["emotions"].append(msg["emotion"])

    def inject() -> None:
        """The same frames straight into the stream, as a gateway that let them through would
        write them: the worker itself must survive them."""
        for data in bad * 3:
            r.xadd(
                c.FRAMES_STREAM,
                {
                    c.F_VERSION: b"1",
                    c.F_SESSION: session["id"].encode(),
                    c.F_STUDENT: eve["student_id"].encode(),
                    c.F_SEQ: b"1",
                    c.F_RECEIVED_MS: str(time.time() * 1000).encode(),
                    c.F_EMOTION: b"1",
                    c.F_JPEG: data,
                },
            )
            time.sleep(0.2)

    async def main() -> None:
        inject_task = asyncio.to_thread(inject)
        await asyncio.gather(
            teacher(11),
            student(ada["token"], [good], 9, None),
            student(eve["token"], bad, 9, seen["eve_refused"]),
            inject_task,
        )

    asyncio.run(main())
    # The worker is the same process, alive, and analysed the other student all along.
    assert worker_pids(server) == [pid] and psutil.pid_exists(pid)
    assert len(seen["emotions"]) >= 3, seen
    # The gateway refused every crafted frame at the door, with a reason the page is told.
    assert seen["eve_refused"] and set(seen["eve_refused"]) <= {"corrupt", "too_large"}
    # The ones written to the stream directly were dropped by the worker and counted for Eve.
    counts = {k.decode(): int(v) for k, v in r.hgetall(c.stream_stats_key(session["id"])).items()}
    eve_drops = sum(n for k, n in counts.items() if k.startswith(eve["student_id"] + ":dropped."))
    assert eve_drops >= len(bad) * 3, counts
    assert counts.get(eve["student_id"] + ":processed", 0) == 0
    assert "Traceback" not in server.tail(400)
