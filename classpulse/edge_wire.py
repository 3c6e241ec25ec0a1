"""The edge-capture "faces" message (docs/edge-wire.md): parse and encode, stdlib only.

In edge capture the student's page runs the face detector and sends, per captured frame, one
binary WebSocket message with the face boxes, scores and keypoints and (when the policy wants
emotions) one grey crop per face, instead of a JPEG. Version 2 (what the pages send) adds each
face's head yaw and pitch (``classpulse.head_pose``); version 1 (pages opened before it) is
still read, its faces with ``yaw``/``pitch`` None (the worker computes them from the keypoints).
The gateway validates it with ``parse`` before writing it to the frames stream; the worker
parses it again (a stream entry is untrusted too). ``encode`` builds one (tests, benchmarks,
simulated students).

No numpy here: the gateway imports this module, and it decodes no image and runs no model.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from classpulse.head_pose import LIMIT_DEG, head_pose

MAGIC = b"CPFM"
VERSION = 2  # what encode (and the pages) write
VERSIONS = (1, 2)  # what parse reads: version 1 from pages opened before version 2
FLAG_CROPS = 0x01  # bit 0: one crop per face follows the faces
# bit 1 (only with bit 0): the crops are packed, losslessly: each row replaced by its differences
# from the pixel on its left (PNG's "Sub" filter, modulo 256), then compressed as one raw deflate
# stream (RFC 1951). Face crops hardly compress as they are (≈ 95 %) and by about a quarter once
# filtered, which brings a one-face message under a third of a camera frame. Other bits: 0.
FLAG_PACKED = 0x02
KNOWN_FLAGS = FLAG_CROPS | FLAG_PACKED
# magic, version, flags, n, crop size, width, height, detector ms, capture ms (little-endian)
HEADER = struct.Struct("<4sBBBBHHfd")
HEADER_SIZE = HEADER.size  # 24
KEYPOINTS = 6  # MediaPipe's order: right eye, left eye, nose tip, mouth, right ear, left ear
# x, y, w, h, score, then the keypoints' x, y (version 1); version 2 adds yaw, pitch (degrees)
FACE_V1 = struct.Struct(f"<{5 + 2 * KEYPOINTS}f")  # 68 bytes
FACE = struct.Struct(f"<{5 + 2 * KEYPOINTS + 2}f")
FACE_SIZE = FACE.size  # 76: version 2's, the longest (the gateway's length cap uses it)
FACE_STRUCTS = {1: FACE_V1, 2: FACE}
MIN_SIDE, MAX_SIDE = 16, 4096  # frame width and height, pixels
MAX_DETECTOR_MS = 60_000.0
# Detectors place the boxes (and ear keypoints) of faces at the edge partly outside the frame.
TOLERANCE = 0.1  # of the frame's width or height, on each side

# Refusal reasons: the gateway's ack and classpulse_frames_dropped_total{reason} carry them.
BAD_FACES = "bad_faces"  # malformed header, counts or lengths
BAD_BOX = "bad_box"  # a box or keypoint out of range
BAD_VALUE = "bad_value"  # NaN, inf, a score outside [0, 1], a time or angle out of range
BAD_VERSION = "bad_version"
CROPS_NOT_ALLOWED = "crops_not_allowed"  # crops while the policy's emotion mode is off
TOO_MANY_FACES = "too_many_faces"
REASONS = (BAD_FACES, BAD_BOX, BAD_VALUE, BAD_VERSION, CROPS_NOT_ALLOWED, TOO_MANY_FACES)

Box = tuple[float, float, float, float]  # x, y, w, h in frame pixels
Keypoints = tuple[tuple[float, float], ...]


class WireError(ValueError):
    """A faces message that breaks the rules; ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FaceBox:
    box: Box
    score: float
    keypoints: Keypoints
    # Head yaw and pitch in degrees as the page computed them (version 2); None in version 1.
    yaw: float | None = None
    pitch: float | None = None


@dataclass(frozen=True, slots=True)
class FacesMessage:
    """A parsed faces message: a view of the bytes it came from (the crops are not copied)."""

    width: int
    height: int
    detector_ms: float
    capture_ms: float  # the page's clock, ms since the Unix epoch
    faces: list[FaceBox]
    crop_size: int  # side s of each crop; 0 when the message carries none
    # n·s·s bytes, face after face, row-major grey; empty without crops. When ``filtered``
    # (a packed message, inflated here) each row still holds its "Sub" differences: the worker
    # undoes them with numpy (a cumulative sum per row, modulo 256), not this stdlib module.
    crops: memoryview
    filtered: bool = False
    version: int = VERSION

    @property
    def has_crops(self) -> bool:
        return self.crop_size > 0


def is_faces(data: bytes | bytearray | memoryview) -> bool:
    """True when a binary message claims to be a faces message (it starts with the magic)."""
    return bytes(data[:4]) == MAGIC


def message_size(n: int, crop_size: int, version: int = VERSION) -> int:
    """Bytes of a faces message with n faces and crops of side ``crop_size`` (0: no crops)."""
    return HEADER_SIZE + FACE_STRUCTS[version].size * n + crop_size * crop_size * n


def check(
    data: bytes | bytearray | memoryview,
    max_faces: int,
    crop_size_expected: int | None,
    crops_allowed: bool,
) -> None:
    """``parse``'s rules and reasons, without building its faces: the gateway's check of every
    faces message (the worker parses the stream entry again)."""
    parse(data, max_faces, crop_size_expected, crops_allowed, _build=False)


def parse(
    data: bytes | bytearray | memoryview,
    max_faces: int,
    crop_size_expected: int | None,
    crops_allowed: bool,
    _build: bool = True,
) -> FacesMessage:
    """Validate a faces message and return its view; ``WireError`` on any broken rule.

    ``crop_size_expected``: the classifier's input side (None: any side is accepted);
    ``crops_allowed``: False under the emotion mode ``off``, where the page sends boxes only.
    Checks run header first, so a message is refused with the reason of its first fault."""
    view = memoryview(data)
    if view.ndim != 1 or view.format != "B":
        view = view.cast("B")
    if len(view) < HEADER_SIZE:
        raise WireError(BAD_FACES, f"a faces message has at least {HEADER_SIZE} bytes")
    magic, version, flags, n, size, width, height, detector_ms, capture_ms = HEADER.unpack_from(
        view
    )
    if magic != MAGIC:
        raise WireError(BAD_FACES, "not a faces message (no CPFM magic)")
    if version not in VERSIONS:
        raise WireError(BAD_VERSION, f"faces message version {version}; this server reads 1, 2")
    record = FACE_STRUCTS[version]
    faces_end = HEADER_SIZE + record.size * n
    if flags & ~KNOWN_FLAGS:
        raise WireError(BAD_FACES, f"unknown flag bits 0x{flags & ~KNOWN_FLAGS:02x}")
    if n > max_faces:
        raise WireError(TOO_MANY_FACES, f"{n} faces; at most {max_faces}")
    crops = bool(flags & FLAG_CROPS)
    packed = bool(flags & FLAG_PACKED)
    if packed and not crops:
        raise WireError(BAD_FACES, "the packed flag needs the crops flag")
    if crops and not crops_allowed:
        raise WireError(CROPS_NOT_ALLOWED, "no crops while the policy's emotion mode is off")
    if crops and (size == 0 or (crop_size_expected is not None and size != crop_size_expected)):
        want = crop_size_expected if crop_size_expected is not None else "more than 0"
        raise WireError(BAD_FACES, f"crop size {size}; expected {want}")
    if not crops and size != 0:
        raise WireError(BAD_FACES, "crop size must be 0 when no crops are included")
    expected = faces_end + n * size * size  # message_size(n, size, version)
    if packed:  # the crops' length is the deflate stream's: it must inflate to exactly n·s·s
        if len(view) <= faces_end:
            raise WireError(BAD_FACES, f"{len(view)} bytes; {n} faces and packed crops need more")
    elif len(view) != expected:
        raise WireError(BAD_FACES, f"{len(view)} bytes; {n} faces need exactly {expected}")
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise WireError(BAD_FACES, f"frame size {width}×{height} out of range")
    if not (math.isfinite(detector_ms) and 0.0 <= detector_ms < MAX_DETECTOR_MS):
        raise WireError(BAD_VALUE, "detector time must be finite, 0 ≤ t < 60000 ms")
    if not (math.isfinite(capture_ms) and capture_ms >= 0.0):
        raise WireError(BAD_VALUE, "capture time must be finite and not negative")
    records = record.iter_unpack(view[HEADER_SIZE:faces_end])
    faces = [face for values in records if (face := _face(values, width, height, _build))]
    tail = view[faces_end:]
    if packed:
        tail = memoryview(_inflate(tail, n * size * size))
    return FacesMessage(
        width=width,
        height=height,
        detector_ms=detector_ms,
        capture_ms=capture_ms,
        faces=faces,
        crop_size=size,
        crops=tail,
        filtered=packed,
        version=version,
    )


def _inflate(data: memoryview, size: int) -> bytes:
    """A raw deflate stream that inflates to exactly ``size`` bytes and ends where ``data``
    ends; never inflates more than size + 1 bytes (no decompression bomb)."""
    inflater = zlib.decompressobj(wbits=-15)
    try:
        out = inflater.decompress(data, size + 1)
    except zlib.error as exc:
        raise WireError(BAD_FACES, f"packed crops are not a raw deflate stream: {exc}") from None
    if len(out) != size or not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
        raise WireError(BAD_FACES, f"packed crops must inflate to exactly {size} bytes")
    return out


def sub_filter(crops: bytes | bytearray | memoryview, size: int) -> bytes:
    """PNG's "Sub" filter on rows of ``size`` bytes (each byte minus its left neighbour, modulo
    256; a row's first byte kept). Pure Python: for tests and simulated students only."""
    raw = bytes(crops)
    out = bytearray(raw)
    for i in range(len(raw)):
        if i % size:
            out[i] = (raw[i] - raw[i - 1]) & 0xFF
    return bytes(out)


def pack_crops(crops: bytes | bytearray | memoryview, size: int) -> bytes:
    """The packed form of n·s·s crop bytes (``FLAG_PACKED``): Sub-filtered rows, raw deflate."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    return compressor.compress(sub_filter(crops, size)) + compressor.flush()


def _face(values: tuple[float, ...], width: int, height: int, build: bool = True) -> FaceBox | None:
    """One face's values checked (the first fault's reason), then built unless ``build`` is
    False (``check``: no tuples, no FaceBox)."""
    if not all(map(math.isfinite, values)):
        raise WireError(BAD_VALUE, "face values must be finite (no NaN or inf)")
    x, y, w, h, score = values[:5]
    if not 0.0 <= score <= 1.0:
        raise WireError(BAD_VALUE, f"score {score:g} outside [0, 1]")
    dx, dy = TOLERANCE * width, TOLERANCE * height
    if w <= 0 or h <= 0 or x < -dx or y < -dy or x + w > width + dx or y + h > height + dy:
        raise WireError(BAD_BOX, f"box ({x:g}, {y:g}, {w:g}, {h:g}) outside {width}×{height}")
    end = 5 + 2 * KEYPOINTS
    xs, ys = values[5:end:2], values[6:end:2]
    for px, py in zip(xs, ys, strict=True):
        if not (-dx <= px <= width + dx and -dy <= py <= height + dy):
            raise WireError(BAD_BOX, f"keypoint ({px:g}, {py:g}) outside {width}×{height}")
    yaw = pitch = None
    if len(values) > end:  # version 2: the page's head yaw and pitch
        yaw, pitch = values[end], values[end + 1]
        if not (abs(yaw) <= LIMIT_DEG and abs(pitch) <= LIMIT_DEG):
            raise WireError(BAD_VALUE, f"yaw {yaw:g} or pitch {pitch:g} outside [-90, 90]")
    if not build:
        return None
    return FaceBox((x, y, w, h), score, tuple(zip(xs, ys, strict=True)), yaw, pitch)


def encode(
    width: int,
    height: int,
    faces: Sequence[tuple[Sequence[float], float, Sequence[Sequence[float]] | None]]
    | Sequence[tuple[Sequence[float], float, Sequence[Sequence[float]] | None, float, float]],
    crops: bytes | bytearray | memoryview | None = None,
    crop_size: int = 0,
    detector_ms: float = 0.0,
    capture_ms: float = 0.0,
    packed: bool = False,
    version: int = VERSION,
) -> bytes:
    """A faces message: ``faces`` as (box x, y, w, h; score; 6 keypoints (x, y) or None), and
    in version 2 optionally yaw, pitch after them (else computed from the keypoints as the page
    does; 0, 0 without keypoints), ``crops`` the n·s·s grey bytes of their crops (or None: boxes
    only), ``packed`` as the pages send them (``FLAG_PACKED``).

    Values are packed as given (no validation: tests build bad messages with it); a numpy
    array of crops (n, s, s) uint8 may be passed as ``memoryview(array)``."""
    flags = 0
    tail = b""
    if crops is not None:
        tail = bytes(crops)
        flags |= FLAG_CROPS
        if len(tail) != crop_size * crop_size * len(faces):
            raise ValueError(f"{len(tail)} crop bytes for {len(faces)} faces of {crop_size}²")
        if packed:
            tail = pack_crops(tail, crop_size)
            flags |= FLAG_PACKED
    else:
        crop_size = 0
    parts = [
        HEADER.pack(
            MAGIC, version, flags, len(faces), crop_size, width, height, detector_ms, capture_ms
        )
    ]
    for box, score, keypoints, *angles in faces:
        points = [0.0] * (2 * KEYPOINTS)
        if keypoints is not None:
            points = [float(v) for point in keypoints for v in point]
            if len(points) != 2 * KEYPOINTS:
                raise ValueError(f"{KEYPOINTS} keypoints (x, y) per face")
        values = [*(float(v) for v in box), float(score), *points]
        if version >= 2:
            if not angles:
                angles = list(head_pose(box, keypoints)) if keypoints is not None else [0.0, 0.0]
            values += [float(a) for a in angles]
        parts.append(FACE_STRUCTS[version].pack(*values))
    parts.append(tail)
    return b"".join(parts)
