"""Edge capture: the page runs the face detector and sends one faces message per frame (boxes,
scores, keypoints and grey crops; docs/edge-wire.md) instead of a JPEG. Broken messages are
refused at the gateway with their reason and counted; good ones go through the same frames stream
to the real worker, whose crops join the batch's one classifier call, and to the real aggregator;
the result equals the JPEG path's for the same frame."""

from __future__ import annotations

import json
import math
import struct
import time
import zlib

import numpy as np
import pytest

from classpulse import contracts as c
from classpulse import edge_wire
from classpulse.head_pose import head_pose
from classpulse.policy import Policy, write_mirror
from tests import pipeline_helpers
from tests import stream_helpers as streams
from tests.edge_helpers import faces_message, now_ms
from tests.edge_socket_helpers import (
    BOX,
    FACE,
    KEYPOINTS,
    _ack,
    _metrics,
    _send,
    _stream_stats,
    _student,
)
from tests.gateway_helpers import JPEG, joined_session, next_json, token_protocols
from tests.pipeline_helpers import InferenceWorker
from tests.privacy_helpers import Pipeline, a_class, rows
from tests.stream_helpers import add_frame, drain_worker, stats
from tests.stream_helpers import jpeg as face_jpeg
from worker.pipeline import decode_jpeg

pipeline = streams.pipeline  # the stream tests' fixture: the models, loaded once per module
classify_calls = pipeline_helpers.classify_calls  # the emotion model's calls, counted


def message(faces=(FACE,), crops: bool = True, size: int = 64, w=320, h=240, **kw) -> bytes:
    """A faces message with synthetic boxes and blank crops of side ``size``."""
    data = bytes(size * size * len(faces)) if crops else None
    return edge_wire.encode(w, h, list(faces), crops=data, crop_size=size, **kw)


def patched(data: bytes, offset: int, fmt: str, value) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def face(x=BOX[0], y=BOX[1], w=BOX[2], h=BOX[3], score=0.9, keypoints=KEYPOINTS):
    return ((x, y, w, h), score, keypoints)


def _deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


GOOD = message()
GOOD_V1 = message(version=1)  # what pages opened before version 2 still send
PACKED = message(packed=True)  # one face, its crop packed as the pages send it
PACKED_HEAD = PACKED[: edge_wire.HEADER_SIZE + edge_wire.FACE_SIZE]
# message -> the reason the gateway refuses it with (the first broken rule).
REFUSED = {
    "short": (GOOD[:-1], "bad_faces"),
    "long": (GOOD + b"\0", "bad_faces"),
    "header cut": (GOOD[:10], "bad_faces"),
    "crop bytes missing": (GOOD[: edge_wire.HEADER_SIZE + edge_wire.FACE_SIZE], "bad_faces"),
    "too many faces": (message([FACE] * 33, crops=False), "too_many_faces"),
    "box left of the frame": (message([face(x=-40)]), "bad_box"),  # tolerance: 32 px
    "box below the frame": (message([face(y=200, h=70)]), "bad_box"),
    "zero width": (message([face(w=0)]), "bad_box"),
    "keypoint outside": (message([face(keypoints=[(400, 60)] + KEYPOINTS[1:])]), "bad_box"),
    "NaN x": (message([face(x=math.nan)]), "bad_value"),
    "inf height": (message([face(h=math.inf)]), "bad_value"),
    "NaN keypoint": (message([face(keypoints=[(math.nan, 1)] + KEYPOINTS[1:])]), "bad_value"),
    "score over 1": (message([face(score=1.5)]), "bad_value"),
    "negative score": (message([face(score=-0.1)]), "bad_value"),
    "NaN detector time": (message(detector_ms=math.nan), "bad_value"),
    "detector time 60 s": (message(detector_ms=60_000.0), "bad_value"),
    "unknown version": (patched(GOOD, 4, "<B", 3), "bad_version"),
    "version 0": (patched(GOOD, 4, "<B", 0), "bad_version"),
    "yaw over 90": (message([(*face(), 90.5, 0.0)]), "bad_value"),
    "pitch under -90": (message([(*face(), 0.0, -91.0)]), "bad_value"),
    "NaN yaw": (message([(*face(), math.nan, 0.0)]), "bad_value"),
    "inf pitch": (message([(*face(), 0.0, math.inf)]), "bad_value"),
    # Version 1 keeps its own rules: 68-byte faces, no angles.
    "v1 short": (GOOD_V1[:-1], "bad_faces"),
    "v1 read as v2 (a face record too short)": (patched(GOOD_V1, 4, "<B", 2), "bad_faces"),
    "v1 box outside": (message([face(x=-40)], version=1), "bad_box"),
    "v1 NaN score": (message([face(score=math.nan)], version=1), "bad_value"),
    "unknown flag bit": (patched(GOOD, 5, "<B", 0x05), "bad_faces"),
    "packed without crops": (patched(message(crops=False), 5, "<B", 0x02), "bad_faces"),
    "packed, not deflate": (patched(GOOD, 5, "<B", 0x03), "bad_faces"),
    "packed, inflates short": (PACKED_HEAD + _deflate(bytes(4095)), "bad_faces"),
    "packed, inflates long": (PACKED_HEAD + _deflate(bytes(4097)), "bad_faces"),
    "packed, bytes after the stream": (PACKED + b"\0", "bad_faces"),
    "packed, stream cut": (PACKED[:-1], "bad_faces"),
    "packed, nothing": (PACKED_HEAD, "bad_faces"),
    "packed, a bomb": (PACKED_HEAD + _deflate(bytes(50_000_000)), "bad_faces"),
    "crop size 32": (message(size=32), "bad_faces"),
    "crop size without crops": (patched(message(crops=False), 7, "<B", 64), "bad_faces"),
    "frame 8 px wide": (message(w=8), "bad_faces"),
}


# --- the wire format --------------------------------------------------------------------------
def test_parse_reads_back_what_encode_wrote():
    crops = np.arange(2 * 64 * 64, dtype=np.uint32).astype(np.uint8).reshape(2, 64, 64)
    data = edge_wire.encode(
        320,
        240,
        [FACE, face(x=10, score=1.0, keypoints=None)],
        crops=memoryview(crops),
        crop_size=64,
        detector_ms=12.5,
        capture_ms=1_700_000_000_123.25,
    )
    assert len(data) == edge_wire.message_size(2, 64) == 24 + 2 * 76 + 2 * 4096
    assert data[4] == edge_wire.VERSION == 2
    assert data[:4] == b"CPFM" and edge_wire.is_faces(data) and not edge_wire.is_faces(JPEG)
    msg = edge_wire.parse(data, max_faces=2, crop_size_expected=64, crops_allowed=True)
    assert (msg.width, msg.height, msg.crop_size, msg.has_crops) == (320, 240, 64, True)
    assert (msg.detector_ms, msg.capture_ms) == (12.5, 1_700_000_000_123.25)
    assert msg.faces[0].box == BOX and msg.faces[0].score == pytest.approx(0.9)
    assert msg.faces[0].keypoints == tuple((float(x), float(y)) for x, y in KEYPOINTS)
    assert msg.faces[1].keypoints == ((0.0, 0.0),) * 6
    # Version 2 carries the page's yaw and pitch: encode computes them as the page does.
    assert (msg.faces[0].yaw, msg.faces[0].pitch) == pytest.approx(head_pose(BOX, KEYPOINTS))
    assert (msg.faces[1].yaw, msg.faces[1].pitch) == (0.0, 0.0) and msg.version == 2
    assert bytes(msg.crops) == crops.tobytes()
    # Boxes only (what a page sends under "off"): no crop bytes, crop size 0.
    boxes = edge_wire.parse(message(crops=False), 32, 64, crops_allowed=False)
    assert not boxes.has_crops and len(boxes.crops) == 0 and len(boxes.faces) == 1
    # Packed (what pages send): the same crops back, still "Sub"-filtered; the worker's
    # running sum per row restores them exactly, and the message is smaller.
    packed = edge_wire.encode(
        320, 240, [FACE, FACE], crops=memoryview(crops), crop_size=64, packed=True
    )
    msg = edge_wire.parse(packed, max_faces=2, crop_size_expected=64, crops_allowed=True)
    assert msg.filtered and packed[5] == edge_wire.FLAG_CROPS | edge_wire.FLAG_PACKED
    restored = np.cumsum(np.frombuffer(msg.crops, np.uint8).reshape(2, 64, 64), 2, np.uint8)
    assert np.array_equal(restored, crops) and len(packed) < len(data) / 10
    # Version 1 (pages opened before version 2) still parses: no angles, 68-byte faces.
    old = edge_wire.encode(
        320, 240, [FACE], crops=memoryview(crops[:1]), crop_size=64, packed=True, version=1
    )
    msg = edge_wire.parse(old, max_faces=2, crop_size_expected=64, crops_allowed=True)
    assert msg.version == 1 and (msg.faces[0].yaw, msg.faces[0].pitch) == (None, None)
    assert msg.faces[0].keypoints == tuple((float(x), float(y)) for x, y in KEYPOINTS)
    assert len(edge_wire.encode(320, 240, [FACE], version=1)) == edge_wire.message_size(1, 0, 1)
    assert edge_wire.message_size(1, 0, 1) == 24 + 68
    # Explicit angles go through as given (float32), at the limits too.
    msg = edge_wire.parse(message([(*FACE, 90.0, -12.5)]), 32, 64, True)
    assert (msg.faces[0].yaw, msg.faces[0].pitch) == (90.0, -12.5)
    # No faces at all is a valid frame (nobody in view).
    assert edge_wire.parse(message(faces=()), 32, 64, True).faces == []


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_parse_refuses_each_broken_rule_with_its_reason(case):
    data, reason = REFUSED[case]
    with pytest.raises(edge_wire.WireError) as exc:
        edge_wire.parse(data, max_faces=32, crop_size_expected=64, crops_allowed=True)
    assert exc.value.reason == reason and str(exc.value)


def test_crops_are_refused_when_not_allowed_and_boxes_pass():
    with pytest.raises(edge_wire.WireError) as exc:
        edge_wire.parse(GOOD, 32, 64, crops_allowed=False)
    assert exc.value.reason == "crops_not_allowed"
    # Tolerance: boxes of faces at the edge may reach 10 % of the frame past it.
    edge = message([face(x=-30, y=-20, w=60, h=60, keypoints=[(-31, -23)] * 6)], crops=False)
    assert edge_wire.parse(edge, 32, 64, crops_allowed=False).faces[0].box[0] == -30


# --- the gateway ------------------------------------------------------------------------------
def test_broken_faces_messages_are_refused_counted_and_the_socket_goes_on(
    settings, clean_redis, pipeline
):
    # Not testing the rate cap (every message spends a token, refused ones too).
    settings = settings.model_copy(update={"frame_max_fps": 1e6})
    good = faces_message(pipeline, face_jpeg())
    with a_class(settings) as k:
        ada = k.join("Ada")
        with _student(k.client, ada["token"]) as ws:
            ws.receive_json()
            for case, (data, reason) in sorted(REFUSED.items()):
                ws.send_bytes(data)
                ack = _ack(ws)
                assert ack == {"type": "ack", "seq": ack["seq"], "ok": False, "reason": reason}, (
                    case
                )
            ws.send_bytes(good)  # still usable after all that
            assert _ack(ws)["ok"] is True
            k.put_policy(emotion_mode="off")  # crops are refused now; boxes only pass
            ws.send_bytes(good)
            assert _ack(ws)["reason"] == "crops_not_allowed"
            ws.send_bytes(faces_message(pipeline, face_jpeg(), crops=False))
            assert _ack(ws)["ok"] is True
        metrics = _metrics(k.client)
        counts = _stream_stats(k, ada["student_id"], received=len(REFUSED) + 3)
    dropped = metrics["classpulse_frames_dropped"]
    expected: dict[str, int] = {"crops_not_allowed": 1}
    for _, reason in REFUSED.values():
        expected[reason] = expected.get(reason, 0) + 1
    for reason, n in expected.items():
        assert dropped[(reason,)] == n, reason
    assert clean_redis.xlen(c.FRAMES_STREAM) == 2  # the two good ones, nothing else
    kinds = [f[c.F_KIND] for _, f in clean_redis.xrange(c.FRAMES_STREAM)]
    assert kinds == [b"faces", b"faces"]
    assert counts["received"] == len(REFUSED) + 3 and counts["accepted"] == 2
    assert counts["dropped"]["bad_faces"] == expected["bad_faces"]
    # The worker analyses the two good ones (no crash), under the policy now in force.
    worker = InferenceWorker(settings, clean_redis, pipeline)
    assert drain_worker(worker) == 2
    assert clean_redis.xpending(c.FRAMES_STREAM, c.WORKER_GROUP)["pending"] == 0


def test_faces_messages_follow_the_frame_rules(settings, clean_redis, pipeline):
    """Consent, the rate cap and the size cap apply to faces messages as to frames."""
    settings = settings.model_copy(update={"frame_max_fps": 1.0, "frames_in_flight": 1})
    good = faces_message(pipeline, face_jpeg())
    with a_class(settings) as k:
        declined = k.join("Bo", consent=False)
        assert [a["reason"] for a in _send(k.client, declined["token"], [good])] == ["no_consent"]
        ada = k.join("Ada")
        reasons = [a.get("reason") for a in _send(k.client, ada["token"], [good] * 6)]
        assert reasons.count("rate_limited") >= 3 and reasons.count(None) >= 2
    # Faces messages have their own size cap: what the wire format allows for max_faces faces.
    small = settings.model_copy(update={"max_faces": 0})
    with joined_session(small, teacher="other@school.example") as (client, _, _, ada):
        assert _send(client, ada["token"], [good])[0]["reason"] == "too_large"


def test_the_page_is_told_how_to_capture_and_the_workers_crop_size(settings, clean_redis):
    settings = settings.model_copy(update={"capture_mode": "edge", "max_faces": 4})
    with a_class(settings) as k:
        ada = k.join("Ada")
        with _student(k.client, ada["token"]) as ws:
            config = ws.receive_json()
        assert {k_: config[k_] for k_ in ("capture", "max_faces", "crop_size")} == {
            "capture": "edge",
            "max_faces": 4,
            "crop_size": 64,  # no worker has published its model yet: mini-Xception's side
        }
        assert config["detector_url"] == "/models/face_detection_short_range.onnx"
        assert config["faces_version"] == 2 and config["emotion_mode"] == "per_student"
        assert config["crop_scale"] == settings.crop_scale
        # The worker's detector settings, so the page finds the faces the worker would.
        assert config["min_face_size"] == settings.min_face_size
        assert config["detector_iou_threshold"] == settings.detector_iou_threshold
        assert config["detector_score_threshold"] is None  # the model's own, from its metadata
        # A worker publishes its classifier's input side: within a tick, pages are told it and
        # crops of another side are refused.
        clean_redis.hset(c.MODEL_INFO_KEY, mapping={"crop_size": "48", "crop_scale": "1.25"})
        deadline = time.time() + 5
        while time.time() < deadline:
            with _student(k.client, ada["token"]) as ws:
                config = ws.receive_json()
            if config["crop_size"] == 48:
                break
            time.sleep(0.1)
        assert (config["crop_size"], config["crop_scale"]) == (48, 1.25)
        acks = _send(k.client, ada["token"], [message(size=64), message(size=48)])
        assert [a.get("reason") for a in acks] == ["bad_faces", None]
        over = message([FACE] * 5, crops=False)
        assert _send(k.client, ada["token"], [over])[0]["reason"] == "too_many_faces"


def test_a_connected_page_is_told_a_new_crop_size(settings, clean_redis):
    """A worker with another classifier starts while a page streams: the page's next ack comes
    with a new config message, and its crops of the new side are accepted."""
    settings = settings.model_copy(update={"capture_mode": "edge"})
    with a_class(settings) as k, _student(k.client, k.join("Ada")["token"]) as ws:
        assert ws.receive_json()["crop_size"] == 64
        ws.send_bytes(message(size=64))
        assert _ack(ws)["ok"]
        clean_redis.hset(c.MODEL_INFO_KEY, mapping={"crop_size": "48", "crop_scale": "1.25"})
        config = None
        deadline = time.time() + 10
        while config is None and time.time() < deadline:
            ws.send_bytes(message(size=64))  # accepted until the gateway reads the new side
            ws.send_text(json.dumps({"type": "ping"}))
            while (msg := ws.receive_json())["type"] != "pong":
                config = msg if msg["type"] == "config" else config
            time.sleep(0.25)
        assert config is not None and (config["crop_size"], config["crop_scale"]) == (48, 1.25)
        ws.send_bytes(message(size=48))
        assert _ack(ws)["ok"]


def test_worker_publishes_its_crop_size(settings, clean_redis, pipeline):
    InferenceWorker(settings, clean_redis, pipeline).setup()
    info = clean_redis.hgetall(c.MODEL_INFO_KEY)
    assert info[b"crop_size"] == b"64" and float(info[b"crop_scale"]) == settings.crop_scale


def test_stats_messages_report_capture_mode_detector_time_and_fallbacks(settings, clean_redis):
    settings = settings.model_copy(update={"control_messages_per_second": 100.0})
    with a_class(settings) as k:
        ada = k.join("Ada")
        with _student(k.client, ada["token"]) as ws:
            ws.receive_json()
            ws.send_text(
                json.dumps({"type": "stats", "captured": 3, "capture": "edge", "detector_ms": 7.25})
            )
            for bad in (
                {"captured": 1, "capture": "gpu"},
                {"captured": 1, "detector_ms": -1},
                {"captured": 1, "detector_ms": 60_000},
                {"captured": 1, "detector_ms": "fast"},
                {"captured": 1, "detector_ms": True},
                {"captured": 1, "fallback": "bored"},
                {"capture": "edge"},  # captured stays required
            ):
                ws.send_text(json.dumps({"type": "stats", **bad}))
                error = next_json(ws, lambda m: m["type"] == "error")["message"]
                assert any(w in error for w in ("capture", "detector_ms", "fallback")), bad
            for _ in range(2):  # a page reporting its fallback twice is counted once
                ws.send_text(
                    json.dumps(
                        {
                            "type": "stats",
                            "captured": 2,
                            "capture": "frames",
                            "fallback": "too_slow",
                        }
                    )
                )
            ws.send_text('{"type": "ping"}')
            next_json(ws, lambda m: m["type"] == "pong")
        me = _stream_stats(k, ada["student_id"], captured=7)
        assert (me["captured"], me["capture"], me["detector_ms"]) == (7, "frames", 7.25)
        assert me["fallback"] == "too_slow"  # the teacher's tile says why
        fallbacks = _metrics(k.client)["classpulse_capture_fallbacks"]
        assert fallbacks[("too_slow",)] == 1 and fallbacks[("error",)] == 0
        assert _metrics(k.client)["classpulse_frames_captured"][()] == 7


def test_ingest_is_counted_by_kind_in_messages_and_bytes(settings, clean_redis, pipeline):
    good = faces_message(pipeline, face_jpeg())
    with a_class(settings) as k:
        ada = k.join("Ada")
        acks = _send(k.client, ada["token"], [JPEG, good, GOOD[:-1]])
        assert [a["ok"] for a in acks] == [True, True, False]
        metrics = _metrics(k.client)
    messages, sent = metrics["classpulse_ingest_messages"], metrics["classpulse_ingest_bytes"]
    assert messages == {("frame",): 1, ("faces",): 2}  # refused ones count: they were received
    assert sent == {("frame",): len(JPEG), ("faces",): len(good) + len(GOOD) - 1}
    assert metrics["classpulse_frames_received"][()] == 3


# --- the worker -------------------------------------------------------------------------------
def test_a_faces_message_gives_the_jpeg_paths_emotion_and_reaches_the_dashboard(
    settings, clean_redis, pipeline
):
    """The same frame as a JPEG (Ada) and as the faces message a page would send for it (Bo):
    same boxes, same probabilities; the teacher's live socket shows Bo's emotion."""
    frame = face_jpeg()
    edge = faces_message(pipeline, frame)
    assert len(edge) < len(frame) / 4
    with a_class(settings) as k:
        ada, bo = k.join("Ada"), k.join("Bo")
        pipe = Pipeline(settings, clean_redis, pipeline)
        pubsub = clean_redis.pubsub()
        pubsub.subscribe(c.live_channel(k.session["id"]))
        token = k.teacher["Authorization"].split()[1]
        live = f"/ws/sessions/{k.session['id']}/live"
        with k.client.websocket_connect(live, subprotocols=token_protocols(token)) as dash:
            assert dash.receive_json()["type"] == "snapshot"
            # Two frames each: a tile shows a label once two frames with a face arrived.
            assert all(a["ok"] for a in _send(k.client, ada["token"], [frame, frame]))
            assert pipe.run() == 2
            assert all(a["ok"] for a in _send(k.client, bo["token"], [edge, edge]))
            assert pipe.run() == 2
            published = _published(pubsub, bo["student_id"])
            assert published["emotion"] == "happy"
            shown = next_json(
                dash,
                lambda m: (
                    m["type"] == "student"
                    and m["student_id"] == bo["student_id"]
                    and m.get("emotion") == "happy"
                ),
                limit=100,
            )
        pubsub.close()
        pipe.close()
    assert shown["probs"]["happy"] > 0.5
    results = {(r.student_id, r.seq): r for r in pipe.results()}
    jpeg_result, edge_result = results[(ada["student_id"], 1)], results[(bo["student_id"], 1)]
    assert (edge_result.width, edge_result.height) == (jpeg_result.width, jpeg_result.height)
    (a,), (b,) = jpeg_result.faces, edge_result.faces
    assert b.box == a.box and b.score == pytest.approx(a.score, abs=1e-6)
    assert list(b.probs) == list(a.probs)
    assert max(abs(b.probs[x] - a.probs[x]) for x in a.probs) < 1e-5
    assert max(a.probs, key=a.probs.get) == "happy"
    assert edge_result.mode == "per_student" and "decode" in edge_result.timings_ms


def _published(pubsub, student_id: str, timeout_s: float = 5.0) -> dict:
    """The last emotion update about ``student_id`` published on the session's channel."""
    last: dict = {}
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        m = pubsub.get_message(timeout=0.2)
        if m is None and last:
            return last
        if m and m["type"] == "message":
            update = json.loads(m["data"])
            if update.get("student_id") == student_id and update.get("type") == "student":
                last = update
    return last


@pytest.mark.parametrize("batch_detector", [False, True], ids=["cpu_detector", "gpu_detector"])
def test_a_batch_of_jpeg_and_faces_entries_is_classified_in_one_call(
    settings, clean_redis, roster, pipeline, classify_calls, monkeypatch, batch_detector
):
    """Ada's JPEG frames and Bo's faces messages in one batch: the detector runs on Ada's frames
    only (one call per frame on the CPU, one for the batch as on a GPU), and every face goes to
    the classifier in one call."""
    monkeypatch.setattr(pipeline, "batch_detector", batch_detector)
    detected = pipeline_helpers.count_calls(monkeypatch, pipeline.detector, "detect_batch")
    r = clean_redis
    frame = face_jpeg()
    expected = pipeline.analyze([decode_jpeg(frame)])[0][0][0].probs
    edge = faces_message(pipeline, frame)
    classify_calls.clear()
    detected.clear()
    add_frame(r, roster, student="ada", seq=1, data=frame)
    _add_faces(r, roster, "bo", edge, seq=1)
    add_frame(r, roster, student="ada", seq=2, data=face_jpeg(face=False))
    _add_faces(r, roster, "bo", message(faces=()), seq=2)  # nobody in view
    worker = InferenceWorker(settings, r, pipeline)
    worker.setup()
    batch = r.xreadgroup(c.WORKER_GROUP, worker.name, {c.FRAMES_STREAM: ">"}, count=10)[0][1]
    assert len(batch) == 4 and worker.process(batch) == 4
    assert classify_calls == [2]  # Ada's face cut from her JPEG and Bo's crop, one call
    assert detected == ([2] if batch_detector else [1, 1])  # Bo's entries skip detection
    results = {(x.student_id, x.seq): x for x in _results(r)}
    for student in ("ada", "bo"):
        (f,) = results[(roster[student], 1)].faces
        got = np.array(list(f.probs.values()), np.float32)
        np.testing.assert_allclose(got, expected, atol=1e-5)
    assert results[(roster["ada"], 2)].faces == [] and results[(roster["bo"], 2)].faces == []
    counts = stats(r)
    assert counts["worker.processed"] == 4 and counts["worker.faces"] == 2


def test_under_off_a_faces_message_gives_presence_and_no_probabilities(
    settings, clean_redis, pipeline, classify_calls
):
    with a_class(settings) as k:
        k.put_policy(emotion_mode="off")
        ada = k.join("Ada")
        with _student(k.client, ada["token"]) as ws:
            assert ws.receive_json()["emotion_mode"] == "off"
        boxes = faces_message(pipeline, face_jpeg(), crops=False)
        assert all(a["ok"] for a in _send(k.client, ada["token"], [boxes, boxes]))
        pipe = Pipeline(settings, clean_redis, pipeline)
        assert pipe.run() == 2
        results = pipe.results()
        pipe.close()
        buckets = rows(
            settings,
            "SELECT sum(frames), sum(frames_with_face), bool_and(prob_sums = '{}'::jsonb)"
            " FROM emotion_buckets WHERE student_id = %s",
            ada["student_id"],
        )
    assert classify_calls == []  # the emotion model never ran
    assert all(r.mode == "off" and len(r.faces) == 1 and r.faces[0].probs is None for r in results)
    assert buckets == [(2, 2, True)]  # presence: frames with a face, no probabilities


def test_crops_stamped_before_the_policy_turned_off_are_ignored(
    settings, clean_redis, roster, pipeline, classify_calls
):
    """The worker applies the stricter of the entry's stamp and the mirrored policy: crops the
    gateway let through under per_student are never classified once the policy is off."""
    r = clean_redis
    _add_faces(r, roster, "ada", faces_message(pipeline, face_jpeg()))
    write_mirror(r, Policy(emotion_mode="off"), 1)
    assert drain_worker(InferenceWorker(settings, r, pipeline)) == 1
    (result,) = _results(r)
    assert classify_calls == [] and result.mode == "off"
    assert len(result.faces) == 1 and result.faces[0].probs is None


def test_worker_drops_malformed_faces_entries_and_goes_on(settings, clean_redis, roster, pipeline):
    """A stream entry is untrusted too: the worker parses faces entries again, drops broken ones
    as malformed and processes the good ones around them."""
    r = clean_redis
    good = faces_message(pipeline, face_jpeg())
    _add_faces(r, roster, "ada", good, seq=1)
    for seq, (data, _) in enumerate(REFUSED.values(), start=2):
        _add_faces(r, roster, "ada", data, seq=seq)
    bad = len(REFUSED)
    _add_faces(r, roster, "ada", message(size=32), seq=100)  # not the classifier's input side
    _entry(r, roster, "ada", 101, {c.F_KIND: b"video", c.F_JPEG: face_jpeg()})  # unknown kind
    _entry(r, roster, "ada", 102, {c.F_KIND: c.KIND_FACES, c.F_JPEG: face_jpeg()})  # no faces
    _entry(r, roster, "ada", 103, {c.F_KIND: c.KIND_FRAME, c.F_JPEG: face_jpeg()})
    _add_faces(r, roster, "ada", good, seq=104)
    _add_faces(r, roster, "ada", good, seq=105, age_ms=settings.frame_max_age_ms + 500)
    assert drain_worker(InferenceWorker(settings, r, pipeline)) == 3
    assert sorted(x.seq for x in _results(r)) == [1, 103, 104]
    counts = stats(r)
    assert counts["worker.dropped.malformed"] == bad + 3 and counts["worker.dropped.stale"] == 1
    assert r.xpending(c.FRAMES_STREAM, c.WORKER_GROUP)["pending"] == 0


def _entry(r, roster, student: str, seq: int, fields: dict, age_ms: float = 0.0):
    """A frames stream entry as the gateway writes it, with ``fields`` as the payload."""
    return r.xadd(
        c.FRAMES_STREAM,
        {
            c.F_VERSION: b"1",
            c.F_SESSION: roster["session"],
            c.F_STUDENT: roster[student],
            c.F_SEQ: str(seq),
            c.F_RECEIVED_MS: str(now_ms() - age_ms),
            c.F_EMOTION: b"1",
            c.F_MODE: b"per_student",
            **fields,
        },
    )


def _add_faces(r, roster, student: str, data: bytes, seq: int = 1, age_ms: float = 0.0):
    return _entry(r, roster, student, seq, {c.F_KIND: c.KIND_FACES, c.F_FACES: data}, age_ms)


def _results(r) -> list[c.FrameResult]:
    return [c.result_decoder.decode(f[c.R_DATA]) for _, f in r.xrange(c.RESULTS_STREAM)]


def test_the_faces_message_is_far_smaller_than_the_jpeg(pipeline):
    """What edge capture saves on the wire (the load suite prints it under load)."""
    frame = face_jpeg()
    with_crops, boxes = faces_message(pipeline, frame), faces_message(pipeline, frame, crops=False)
    raw = faces_message(pipeline, frame, packed=False)
    assert len(boxes) == 24 + 76 and len(raw) == 24 + 76 + 64 * 64  # version 2: 76 per face
    # Packed crops (as the pages send them): under a third of the camera frame's JPEG.
    assert len(with_crops) < 0.85 * len(raw) and len(with_crops) < len(frame) / 3
    assert now_ms() > 1.6e12
