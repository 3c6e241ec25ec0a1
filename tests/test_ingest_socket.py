"""What the student socket takes (app/ingest.py), over the real app, Redis and PostgreSQL: edge
capture enforced with CLASSPULSE_CAPTURE_MODE=edge-only (JPEG frames refused as edge_required,
the page told frames_allowed false), only presence-sized frames under the policy "off"
(presence_only), the frame byte cap sized to what pages send and faces messages bounded by their
own format. Every refusal is acknowledged with its reason and counted per student (the stream
stats behind the teacher's tile) and in /metrics."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from app import ingest
from classpulse import contracts as c
from classpulse import edge_wire
from tests import stream_helpers as streams
from tests.edge_socket_helpers import FACE, _ack, _metrics, _send, _stream_stats, _student
from tests.privacy_helpers import a_class

pipeline = streams.pipeline  # the worker's models, loaded once per module


def camera_jpeg(w: int, h: int, noise: float = 0.0) -> bytes:
    """A webcam-like frame as the page encodes it (quality 0.7): the astronaut's face over a
    photo's background, with sensor noise of ``noise`` grey levels."""
    background = cv2.resize(cv2.cvtColor(skdata.coffee(), cv2.COLOR_RGB2BGR), (w, h))
    side = h * 3 // 4
    face = cv2.resize(
        cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)[0:400, 60:460], (side,) * 2
    )
    x, y = (w - side) // 2, (h - side) // 2
    background[y : y + side, x : x + side] = face
    if noise:
        rng = np.random.default_rng(1)
        background = np.clip(background + rng.normal(0, noise, background.shape), 0, 255)
    return cv2.imencode(".jpg", background.astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 70])[
        1
    ].tobytes()


def faces(n: int = 1, crops: bool = True) -> bytes:
    return edge_wire.encode(
        320, 240, [FACE] * n, crops=bytes(64 * 64 * n) if crops else None, crop_size=64
    )


def _dropped(metrics, reason: str) -> float:
    return metrics.get("classpulse_frames_dropped", {}).get((reason,), 0.0)


def test_edge_only_refuses_jpeg_frames_and_tells_the_page(settings, clean_redis):
    settings = settings.model_copy(update={"capture_mode": "edge-only", "frame_max_fps": 1e6})
    with a_class(settings) as k:
        ada = k.join("Ada")
        with _student(k.client, ada["token"]) as ws:
            config = ws.receive_json()
        assert config["type"] == "config"
        assert config["capture"] == "edge"  # run the detector, as with "edge"...
        assert config["frames_allowed"] is False  # ...and never fall back to frames
        sent = [camera_jpeg(320, 240), faces(), camera_jpeg(192, 144), b"not a picture"]
        acks = _send(k.client, ada["token"], sent)
        assert [a.get("reason") for a in acks] == ["edge_required", None] + ["edge_required"] * 2
        k.put_policy(emotion_mode="off")  # under off too; boxes only pass
        acks = _send(k.client, ada["token"], [camera_jpeg(192, 144), faces(crops=False)])
        assert [a.get("reason") for a in acks] == ["edge_required", None]
        metrics = _metrics(k.client)
        counts = _stream_stats(k, ada["student_id"], received=6)
    assert _dropped(metrics, "edge_required") == 4
    assert counts["dropped"]["edge_required"] == 4 and counts["accepted"] == 2
    kinds = [f[c.F_KIND] for _, f in clean_redis.xrange(c.FRAMES_STREAM)]
    assert kinds == [b"faces", b"faces"]  # no picture reached the stream


@pytest.mark.parametrize("capture", ["edge", "frames"])
def test_edge_and_frames_modes_allow_frames(settings, clean_redis, capture):
    settings = settings.model_copy(update={"capture_mode": capture})
    with a_class(settings) as k, _student(k.client, k.join("Ada")["token"]) as ws:
        config = ws.receive_json()
        assert (config["capture"], config["frames_allowed"]) == (capture, True)
        assert (config["presence_width"], config["presence_height"]) == (192, 144)
        ws.send_bytes(camera_jpeg(320, 240))
        assert _ack(ws)["ok"] is True


def test_under_off_only_presence_sized_frames_are_taken(settings, clean_redis, pipeline):
    """A page that fell back to frames still gives presence under "off", from a frame no larger
    than the worker's detector looks at; a full camera frame is refused as presence_only."""
    settings = settings.model_copy(update={"frame_max_fps": 1e6})
    presence = camera_jpeg(192, 144)
    full = camera_jpeg(320, 240, noise=8)  # a noisy webcam's frame at the page's usual size
    assert len(presence) <= ingest.PRESENCE_FRAME_MAX_BYTES < len(full)
    # What presence needs is in the small frame: the worker's detector finds the face in it.
    small = cv2.imdecode(np.frombuffer(presence, np.uint8), cv2.IMREAD_COLOR)
    assert len(pipeline.detector.detect(small)) == 1
    with a_class(settings) as k:
        ada = k.join("Ada")
        acks = _send(k.client, ada["token"], [full, presence])
        assert [a.get("reason") for a in acks] == [None, None]  # per_student: both taken
        k.put_policy(emotion_mode="off")
        acks = _send(k.client, ada["token"], [full, presence, faces(crops=False)])
        assert [a.get("reason") for a in acks] == ["presence_only", None, None]
        k.put_policy(emotion_mode="aggregate_only")
        assert _send(k.client, ada["token"], [full])[0]["ok"] is True
        metrics = _metrics(k.client)
        counts = _stream_stats(k, ada["student_id"], received=6)
    assert _dropped(metrics, "presence_only") == 1
    assert counts["dropped"] == {"presence_only": 1} and counts["accepted"] == 5


def test_frame_cap_is_what_pages_send_and_faces_have_their_own(settings, clean_redis):
    settings = settings.model_copy(update={"frame_max_fps": 1e6})
    assert settings.frame_max_bytes == 48_000  # the default: 320x240 at 0.7, worst case 41.3 KB
    noise = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    worst = cv2.imencode(".jpg", noise, [cv2.IMWRITE_JPEG_QUALITY, 70])[1].tobytes()
    big = camera_jpeg(1280, 960, noise=8)  # a full camera picture: no page sends that
    every_face = faces(settings.max_faces)  # 32 faces, unpacked crops: 133 KB
    assert len(worst) < settings.frame_max_bytes < len(big)
    assert len(every_face) > settings.frame_max_bytes
    with a_class(settings) as k:
        ada = k.join("Ada")
        acks = _send(k.client, ada["token"], [worst, big, every_face, every_face + b"\0"])
        assert [a.get("reason") for a in acks] == [None, "too_large", None, "too_large"]


@pytest.mark.parametrize("capture", ["edge", "edge-only"])
def test_damaged_messages_over_the_socket_are_refused_with_known_reasons(
    settings, clean_redis, capture
):
    """Random damage to real frames and faces messages (tests/test_ingest.py's mutations),
    under "off" too: every message gets its ack with a known reason, nothing crashes, the
    socket goes on, and only what was acked reached the stream."""
    from tests.ingest_helpers import mutations

    settings = settings.model_copy(update={"capture_mode": capture, "frame_max_fps": 1e6})
    known = set(ingest.REASONS) | set(edge_wire.REASONS) | {None}
    with a_class(settings) as k:
        ada = k.join("Ada")
        acks = _send(k.client, ada["token"], mutations(seed=7, n=150))
        k.put_policy(emotion_mode="off")
        acks += _send(k.client, ada["token"], mutations(seed=8, n=150) + [faces(crops=False)])
    reasons = [a.get("reason") for a in acks]
    assert set(reasons) <= known, set(reasons) - known
    assert reasons[-1] is None  # still taking good messages after all that
    assert len(set(reasons)) >= 5  # the damage reaches many rules, and some still pass
    # (<=: the gateway deletes frames nobody analysed after twice the freshness limit)
    assert clean_redis.xlen(c.FRAMES_STREAM) <= reasons.count(None)
    if capture == "edge-only":
        kinds = {f[c.F_KIND] for _, f in clean_redis.xrange(c.FRAMES_STREAM)}
        assert kinds <= {b"faces"}
