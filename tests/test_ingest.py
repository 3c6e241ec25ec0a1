"""The gateway's ingest decision (app/ingest.py), as a pure function: what a student page may
send under each capture setting and emotion mode, and the size caps, against real JPEGs as a
browser writes them (OpenCV's encoder at the page's quality) and real faces messages."""

from __future__ import annotations

import zlib

import pytest

from app import ingest
from classpulse import edge_wire
from classpulse.settings import Settings
from tests.ingest_helpers import CAMERA, FACE, PRESENCE, faces, jpeg, mutations

DEFAULT = Settings()
FACES_MAX = ingest.faces_max_bytes(DEFAULT.max_faces, 64)


def decide(data: bytes, capture: str = "edge", mode: str = "per_student", **kw) -> str | None:
    args = {"frame_max_bytes": DEFAULT.frame_max_bytes, "faces_max": FACES_MAX, **kw}
    return ingest.refusal(data, capture_mode=capture, emotion_mode=mode, **args)


@pytest.mark.parametrize("mode", ["per_student", "aggregate_only", "off"])
@pytest.mark.parametrize("capture", ingest.CAPTURE_SETTINGS)
def test_faces_messages_are_taken_in_every_capture_setting_and_mode(capture, mode):
    # Crops under "off" are the parser's to refuse (crops_not_allowed), after the rate limit.
    assert decide(faces(crops=mode != "off"), capture, mode) is None
    assert decide(faces(3, crops=False), capture, mode) is None


@pytest.mark.parametrize("mode", ["per_student", "aggregate_only", "off"])
def test_edge_only_refuses_every_jpeg_frame(mode):
    for data in (CAMERA, PRESENCE, b"\xff\xd8\xff" + b"\0" * 10, b"not a picture"):
        assert decide(data, "edge-only", mode) == ingest.EDGE_REQUIRED
    assert not ingest.frames_allowed("edge-only")
    assert ingest.frames_allowed("edge") and ingest.frames_allowed("frames")


@pytest.mark.parametrize("capture", ["edge", "frames"])
def test_frames_are_taken_where_allowed_up_to_the_cap(capture):
    assert decide(CAMERA, capture) is None
    worst = jpeg(320, 240, noise=True)  # what the page's size and quality can come to at most
    assert len(worst) <= DEFAULT.frame_max_bytes
    assert decide(worst, capture, "aggregate_only") is None
    big = jpeg(640, 480, noise=True)  # twice the page's size: never sent by a page
    assert decide(big, capture) == ingest.TOO_LARGE
    assert decide(b"\xff\xd8\xff" + b"\0" * DEFAULT.frame_max_bytes + b"\xff\xd9", capture) == (
        ingest.TOO_LARGE
    )
    assert decide(b"GIF89a" + b"\0" * 100, capture) == ingest.NOT_JPEG
    assert decide(CAMERA[:-40], capture) == ingest.CORRUPT  # truncated: no end marker


@pytest.mark.parametrize("capture", ["edge", "frames"])
def test_under_off_frames_are_taken_only_presence_sized(capture):
    """The worker's detector sees at most 192 px of any frame: under "off" nothing larger."""
    assert len(CAMERA) < ingest.PRESENCE_FRAME_MAX_BYTES  # bytes alone can't tell them apart
    assert decide(PRESENCE, capture, "off") is None
    assert decide(jpeg(144, 192), capture, "off") is None  # portrait
    assert decide(jpeg(192, 144, noise=True), capture, "off") is None  # the worst 192×144
    assert decide(CAMERA, capture, "off") == ingest.PRESENCE_ONLY  # 320×240, from its header
    assert decide(jpeg(193, 144), capture, "off") == ingest.PRESENCE_ONLY
    assert decide(jpeg(320, 240, noise=True), capture, "off") == ingest.PRESENCE_ONLY
    # The same frames in the other modes: taken.
    for mode in ("per_student", "aggregate_only"):
        assert decide(jpeg(320, 240, noise=True), capture, mode) is None
        assert decide(CAMERA, capture, mode) is None


def declaring(data: bytes, w: int, h: int) -> bytes:
    """The JPEG with its frame header (SOF0) declaring w×h instead of its own size."""
    i = data.index(b"\xff\xc0")
    return data[: i + 5] + h.to_bytes(2, "big") + w.to_bytes(2, "big") + data[i + 9 :]


def test_frame_pixels_are_read_from_the_header_as_the_worker_reads_them():
    assert decide(declaring(CAMERA, 5000, 5000)) == ingest.TOO_LARGE  # a few KB, 25 Mpx
    assert decide(declaring(CAMERA, 1281, 600)) == ingest.TOO_LARGE
    assert decide(declaring(CAMERA, 1280, 720)) is None  # the worker's cap, exactly
    assert decide(jpeg(8, 8)) == ingest.TOO_SMALL
    # The review's trick: a stuffed FF 00 "marker" before a fake small SOF.
    i = CAMERA.index(b"\xff\xdb")
    crafted = CAMERA[:i] + b"\xff\x00\x00\x04" + CAMERA[i:]
    assert decide(crafted) == ingest.CORRUPT
    # The caps are the worker's: both read them from classpulse/jpeg_header.py (frame_size).


def test_faces_messages_are_bounded_by_their_wire_format():
    n, s = DEFAULT.max_faces, 64
    full = faces(n, size=s)  # every face with an unpacked crop: the longest valid message
    assert len(full) == ingest.faces_max_bytes(n, s) > DEFAULT.frame_max_bytes
    assert decide(full) is None
    assert decide(full + b"\0") == ingest.TOO_LARGE
    assert decide(faces(), faces_max=ingest.faces_max_bytes(0, 64)) == ingest.TOO_LARGE
    # The cap is version 2's (76-byte faces, the longer record): a full version 1 message, from
    # a page opened before version 2, is shorter and passes too.
    assert len(full) == 24 + n * (76 + s * s)
    old = edge_wire.encode(320, 240, [FACE] * n, crops=bytes(n * s * s), crop_size=s, version=1)
    assert len(old) == len(full) - 8 * n and decide(old) is None


def test_page_config_says_whether_frames_may_be_sent():
    assert ingest.page_config("edge-only") == {
        "capture": "edge",  # pages from before edge-only run the detector as with "edge"
        "frames_allowed": False,
        "presence_width": 192,
        "presence_height": 144,
    }
    assert ingest.page_config("edge")["frames_allowed"] is True
    assert ingest.page_config("frames")["capture"] == "frames"


def test_the_capture_setting_takes_edge_only():
    assert Settings(capture_mode="edge-only").capture_mode == "edge-only"
    with pytest.raises(ValueError):
        Settings(capture_mode="edge_only")
    assert set(ingest.CAPTURE_SETTINGS) == set(
        Settings.model_fields["capture_mode"].annotation.__args__
    )


def test_presence_cap_fits_the_presence_frame_and_the_detector():
    from pathlib import Path

    from classpulse.modelmeta import ModelContract, read_onnx_metadata

    contract = ModelContract.from_metadata(read_onnx_metadata(Path(DEFAULT.detector_model_path)))
    assert max(contract.input_width, contract.input_height) == ingest.PRESENCE_SIDE
    assert max(ingest.PRESENCE_WIDTH, ingest.PRESENCE_HEIGHT) == ingest.PRESENCE_SIDE
    assert len(jpeg(192, 144, noise=True)) <= ingest.PRESENCE_FRAME_MAX_BYTES


@pytest.mark.parametrize("capture", ingest.CAPTURE_SETTINGS)
@pytest.mark.parametrize("mode", ["per_student", "off"])
def test_damaged_messages_get_a_known_reason_and_never_raise(capture, mode):
    known = set(ingest.REASONS) | {None}
    for data in mutations(seed=zlib.crc32(f"{capture}{mode}".encode()), n=1500):
        assert decide(data, capture, mode) in known
