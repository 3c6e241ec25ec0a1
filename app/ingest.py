"""What the gateway takes from a student page: one pure decision per binary message.

``refusal`` says why a binary message is refused by the cheap checks (its kind, its size, the
capture mode the deployment requires and the policy's emotion mode), or None; the student socket
(``app/routes/ws_student.py``) calls it before the rate limit, and parses a faces message's
contents (``classpulse.edge_wire``) only after it. Every reason is acknowledged to the page and
counted per student like the other drops (the teacher's tile, ``/metrics``).

The rules:
- ``CLASSPULSE_CAPTURE_MODE=edge-only``: only faces messages are taken; a JPEG frame is refused
  as ``edge_required`` (the page is told ``frames_allowed: false`` and says so instead of
  falling back to frames).
- A JPEG frame is at most ``frame_max_bytes`` (sized to what pages send, see settings.py), and
  its size in pixels, read from its header the way the decoder reads it
  (``classpulse.jpeg_header``: a header the worker would not accept is ``corrupt``), at least
  16×16 and at most 1280×720 (``frame_size``: the caps the worker applies too); a faces
  message is at most what the wire format allows for ``max_faces`` faces with crops of the
  workers' side (its exact length is checked when it is parsed).
- Under the policy's emotion mode ``off`` only what presence needs is taken: faces messages
  without crops (``crops_not_allowed``, from the parser), and JPEG frames only where frames are
  allowed at all and only presence-sized: the worker's detector letterboxes every frame to
  ``PRESENCE_SIDE`` (192) pixels on its longer side, so a frame larger than that carries nothing
  presence uses. The page captures at ``PRESENCE_WIDTH`` × ``PRESENCE_HEIGHT`` under ``off``;
  the gateway, which never decodes an image, refuses frames whose header declares more than
  ``PRESENCE_SIDE`` pixels on a side, or over ``PRESENCE_FRAME_MAX_BYTES``, as ``presence_only``.
"""

from __future__ import annotations

from typing import Literal

from classpulse import edge_wire
from classpulse.jpeg_header import (
    JpegHeaderError,
    frame_size,
)

Kind = Literal["frame", "faces"]

# Refusal reasons of this module (the faces parser has its own: edge_wire.REASONS).
TOO_LARGE = "too_large"  # bytes over the cap, or pixels over the worker's
TOO_SMALL = "too_small"  # under 16 pixels on a side: nothing to analyse
NOT_JPEG = "not_jpeg"
CORRUPT = "corrupt"  # a header laid out otherwise than encoders write it (jpeg_header)
EDGE_REQUIRED = "edge_required"  # a JPEG frame where the deployment requires edge capture
PRESENCE_ONLY = "presence_only"  # a JPEG frame larger than presence needs, under "off"
REASONS = (TOO_LARGE, TOO_SMALL, NOT_JPEG, CORRUPT, EDGE_REQUIRED, PRESENCE_ONLY)


# Settings.capture_mode: what pages are asked to send, and whether JPEG frames are taken.
CAPTURE_SETTINGS = ("edge", "edge-only", "frames")

# The longest side of the worker's face detector input (BlazeFace full range: 192×192,
# letterboxed): what presence uses of any frame.
PRESENCE_SIDE = 192
PRESENCE_WIDTH, PRESENCE_HEIGHT = 192, 144  # what the page captures under "off" (4:3)
# A 192×144 JPEG at the page's quality (0.7) as Chromium's canvas.toBlob writes it: 2.9–7.3 KB
# for camera-like pictures, 15,329 bytes for uniform noise (the worst case); 16 KiB takes them
# all and refuses a 320×240 camera frame of most scenes.
PRESENCE_FRAME_MAX_BYTES = 16_384


def kind_of(data: bytes) -> Kind:
    """A faces message starts with its magic; anything else is taken for a JPEG frame."""
    return "faces" if edge_wire.is_faces(data) else "frame"


def frames_allowed(capture_mode: str) -> bool:
    """Whether JPEG frames are taken at all (the page's fallback from edge capture)."""
    return capture_mode != "edge-only"


def faces_max_bytes(max_faces: int, crop_size: int) -> int:
    """The longest faces message the wire format allows: every face with an unpacked crop, in
    the version with the longest face record (version 2's 76 bytes, ``edge_wire.FACE_SIZE``)."""
    return edge_wire.HEADER_SIZE + max_faces * (edge_wire.FACE_SIZE + crop_size * crop_size)


def refusal(
    data: bytes,
    *,
    capture_mode: str,
    emotion_mode: str,
    frame_max_bytes: int,
    faces_max: int,
) -> str | None:
    """Why the gateway refuses this binary message before the rate limit, or None: a faces
    message's size (its contents are parsed after the rate limit), a JPEG frame's size, header
    and pixels. ``faces_max``: ``faces_max_bytes`` for the server's settings."""
    if kind_of(data) == "faces":
        return TOO_LARGE if len(data) > faces_max else None
    if not frames_allowed(capture_mode):
        return EDGE_REQUIRED
    if len(data) > frame_max_bytes:
        return TOO_LARGE
    try:
        # The header only, as the worker's decoder will read it: not_jpeg (no SOI) or corrupt
        # (truncated, or laid out otherwise than encoders write).
        w, h = frame_size(data)
    except JpegHeaderError as exc:
        return exc.reason
    if emotion_mode == "off" and (
        max(w, h) > PRESENCE_SIDE or len(data) > PRESENCE_FRAME_MAX_BYTES
    ):
        return PRESENCE_ONLY
    return None


def page_config(capture_mode: str) -> dict[str, object]:
    """The config message's fields about what the page may send: ``capture`` (what to run),
    ``frames_allowed`` (false: never fall back to JPEG frames) and the frame size under
    ``off``."""
    return {
        "capture": "frames" if capture_mode == "frames" else "edge",
        "frames_allowed": frames_allowed(capture_mode),
        "presence_width": PRESENCE_WIDTH,
        "presence_height": PRESENCE_HEIGHT,
    }
