"""The worker fills each face's head yaw and pitch (docs/attention.md) only when the frame's stamp
(``F_ATTENTION``) and the policy it reads both observe attention: from its own detector's
keypoints in frames capture, the page's numbers in a faces message version 2, and the page's
keypoints in a version 1 message (pages opened before version 2). Real worker, real models,
real Redis."""

from __future__ import annotations

import time

import msgspec
import pytest

from classpulse import contracts as c
from classpulse import edge_wire
from classpulse.head_pose import head_pose
from classpulse.policy import Policy, write_mirror
from tests import stream_helpers as streams
from tests.edge_helpers import faces_message
from tests.pipeline_helpers import InferenceWorker
from worker.pipeline import decode_jpeg

pipeline = streams.pipeline  # the stream tests' fixture: the models, loaded once per module

SESSION, STUDENT = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"
PAGE_ANGLES = (12.5, -7.25)  # what a version 2 page says, unlike anything the keypoints give


def _add(r, kind: bytes, payload: bytes, stamp: bytes | None, seq: int) -> None:
    fields = {
        c.F_VERSION: b"1",
        c.F_SESSION: SESSION.encode(),
        c.F_STUDENT: STUDENT.encode(),
        c.F_SEQ: str(seq).encode(),
        c.F_RECEIVED_MS: str(time.time() * 1000).encode(),
        c.F_EMOTION: b"1",
        c.F_KIND: kind,
        c.F_FACES if kind == c.KIND_FACES else c.F_JPEG: payload,
    }
    if stamp is not None:
        fields[c.F_ATTENTION] = stamp
    r.xadd(c.FRAMES_STREAM, fields)


def _mirror(r, attention: bool | None) -> None:
    """The policy mirror with its ``attention`` field (None: no mirror at all)."""
    r.delete(c.POLICY_KEY)
    if attention is not None:
        write_mirror(r, Policy(attention=attention), 1)


def _inputs(pipeline):
    """(kind, payload) per capture: a JPEG frame, a version 2 faces message with the page's own
    angles, a version 1 message; and the angles each result must carry when attention is on."""
    jpeg = streams.jpeg()
    (det,) = pipeline.detector.detect(decode_jpeg(jpeg))
    keypoints = det.keypoints.tolist()
    parsed = edge_wire.parse(faces_message(pipeline, jpeg, packed=False), 32, None, True)
    (face,) = parsed.faces
    size = parsed.crop_size
    v2, v1 = (
        edge_wire.encode(
            parsed.width, parsed.height, [faces], crops=parsed.crops, crop_size=size, version=v
        )
        for faces, v in (
            ((face.box, face.score, face.keypoints, *PAGE_ANGLES), 2),
            ((face.box, face.score, face.keypoints), 1),
        )
    )
    box = tuple(round(v) for v in det.box)
    return [
        (c.KIND_FRAME, jpeg, head_pose(box, keypoints)),
        (c.KIND_FACES, v2, PAGE_ANGLES),
        (c.KIND_FACES, v1, head_pose(tuple(round(v) for v in face.box), face.keypoints)),
    ]


def _results(r, settings, pipeline) -> list[tuple[dict, c.FrameResult]]:
    assert streams.drain_worker(InferenceWorker(settings, r, pipeline)) == 3
    out = []
    for _, fields in r.xrange(c.RESULTS_STREAM):
        raw = fields[c.R_DATA]
        out.append((msgspec.json.decode(raw), c.result_decoder.decode(raw)))
    r.delete(c.RESULTS_STREAM)
    return sorted(out, key=lambda x: x[1].seq)


@pytest.mark.parametrize(
    "stamp, mirror, observed",
    [
        (b"1", None, True),  # no mirror (Redis lost it): the gateway's stamp rules
        (b"1", False, False),  # the policy now says off: the stricter wins
        (b"0", None, False),
        (None, None, False),  # a gateway that predates attention stamps nothing: off
        (b"0", True, False),
        (b"1", True, True),
    ],
)
def test_yaw_and_pitch_only_under_stamp_and_policy(
    settings, clean_redis, pipeline, stamp, mirror, observed
):
    _mirror(clean_redis, mirror)
    inputs = _inputs(pipeline)
    for seq, (kind, payload, _) in enumerate(inputs, 1):
        _add(clean_redis, kind, payload, stamp, seq)
    results = _results(clean_redis, settings, pipeline)
    for (raw, result), (kind, _, angles) in zip(results, inputs, strict=True):
        (face,) = result.faces
        (raw_face,) = raw["faces"]
        if observed:
            assert (face.yaw, face.pitch) == pytest.approx(angles, abs=0.01), kind
            assert -90 <= face.yaw <= 90 and -90 <= face.pitch <= 90
        else:  # no angle in the result at all, not even the page's
            assert face.yaw is None and face.pitch is None, kind
            assert raw_face.get("yaw") is None and raw_face.get("pitch") is None
        assert face.probs is not None  # the emotion path is untouched either way


def test_a_frontal_face_faces_the_screen(settings, clean_redis, pipeline):
    """The astronaut photo looks at the camera: small angles from every capture path."""
    from classpulse.head_pose import facing

    _mirror(clean_redis, None)
    inputs = _inputs(pipeline)
    for seq, (kind, payload, _) in enumerate(inputs, 1):
        _add(clean_redis, kind, payload, b"1", seq)
    (frame, _), (page, _), (old, _) = (
        (r.faces[0], raw) for raw, r in _results(clean_redis, settings, pipeline)
    )
    for face in (frame, old):
        assert facing(face.yaw, face.pitch), (face.yaw, face.pitch)
        assert abs(face.yaw) < 10 and abs(face.pitch) < 15
    assert (page.yaw, page.pitch) == PAGE_ANGLES
