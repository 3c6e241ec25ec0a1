"""A JPEG's frame size read the way libjpeg reads it, before anything is decoded.

Used by the inference worker before ``cv2.imdecode`` (and by the gateway to refuse a frame at
the door): a frame whose header claims too many pixels is refused before any allocation.

Why not a simple marker walk: libjpeg treats ``FF 00`` and any bytes between markers as garbage
and scans on for the next ``FF xx``, so a walker that reads ``FF 00`` as a marker with a length
can be shown a small SOF while the decoder, skipping past it, finds a 40000×40000 one. Rather
than emulate every tolerance of the decoder, this reader accepts only the clean layout that
encoders (a browser's ``canvas.toBlob``, OpenCV, libjpeg's own ``cjpeg``) write: after SOI, each
marker directly where the previous segment ends (fill bytes ``FF`` allowed, as the standard
does), only markers libjpeg knows before the first scan, exactly one frame header, a scan after
it and ``FF D9`` at the end. On such a file the decoder meets the same markers in the same
order, so the size returned here is the size it will decode; anything else is refused.
"""

from __future__ import annotations

# Frame headers libjpeg decodes: baseline, extended, progressive (Huffman) and the arithmetic
# ones. Lossless and hierarchical SOFs (C3, C5-C7, CB, CD-CF) it refuses; so do we.
SOF_DECODED = frozenset({0xC0, 0xC1, 0xC2, 0xC9, 0xCA})
SOF_ANY = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# Segments with a length that libjpeg reads or skips before the first scan: DHT, DAC, DQT, DRI,
# DNL, APP0-APP15, COM.
SEGMENTS = frozenset({0xC4, 0xCC, 0xDB, 0xDD, 0xDC, *range(0xE0, 0xF0), 0xFE})
SOS, EOI, SOI = 0xDA, 0xD9, 0xD8
EOI_SLACK = 32  # the EOI marker must be within this many bytes of the end

# The service's frame caps, for the gateway (at the door) and the worker (before decoding). Pages
# send 320×240; a tiny JPEG can declare 65535×65535 and make the decoder allocate gigabytes, and
# 1280×720 is ≈ 2.6 MB of BGR and a few ms of CPU, room for API clients that send more.
MIN_FRAME_SIDE = 16
MAX_FRAME_PIXELS = 1280 * 720
MAX_FRAME_SIDE = 1280


class JpegHeaderError(ValueError):
    """Not a JPEG, or one whose header this reader (and so the service) does not accept;
    ``reason`` is a short counter label: ``not_jpeg`` or ``corrupt``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def jpeg_size(data: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(width, height) the decoder will produce; JpegHeaderError if the file is not a cleanly
    laid out JPEG (see the module's docstring)."""
    data = bytes(data)
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != SOI:
        raise JpegHeaderError("not_jpeg", "not a JPEG (no SOI marker)")
    # EOI ends what browsers write; a few bytes of padding after it are tolerated (some encoders
    # write them). Entropy-coded data can hold no FF D9, so a cut-off file has none near its end.
    if b"\xff\xd9" not in data[-EOI_SLACK:]:
        raise JpegHeaderError("corrupt", "JPEG is truncated (no EOI marker at its end)")
    size: tuple[int, int] | None = None
    i = 2
    while True:
        if i >= n or data[i] != 0xFF:
            raise JpegHeaderError("corrupt", f"JPEG marker expected at byte {i}")
        while i < n and data[i] == 0xFF:  # fill bytes before a marker
            i += 1
        if i >= n:
            raise JpegHeaderError("corrupt", "JPEG ends inside a marker")
        marker = data[i]
        i += 1
        if marker == SOS:
            if size is None:
                raise JpegHeaderError("corrupt", "JPEG scan before its frame header")
            return size
        if marker in SOF_ANY:
            if marker not in SOF_DECODED:
                raise JpegHeaderError("corrupt", f"unsupported JPEG frame type 0x{marker:02X}")
            if size is not None:
                raise JpegHeaderError("corrupt", "JPEG has two frame headers")
            size = _sof(data, i)
        elif marker not in SEGMENTS:
            # 00 (stuffing), SOI again, EOI before a scan, RSTn, TEM, reserved or JPGn: libjpeg
            # would skip, stop or fail on them; an encoder writes none of them here.
            raise JpegHeaderError("corrupt", f"unexpected JPEG marker 0x{marker:02X} at byte {i}")
        if i + 2 > n:
            raise JpegHeaderError("corrupt", "JPEG ends inside a segment length")
        length = int.from_bytes(data[i : i + 2], "big")
        if length < 2 or i + length > n:
            raise JpegHeaderError("corrupt", f"JPEG segment length {length} at byte {i}")
        i += length


def frame_size(data: bytes | bytearray | memoryview) -> tuple[int, int]:
    """``jpeg_size`` held to the service's frame caps: JpegHeaderError with the reason
    ``too_small`` or ``too_large`` (besides ``not_jpeg`` and ``corrupt``)."""
    w, h = jpeg_size(data)
    if min(w, h) < MIN_FRAME_SIDE:
        raise JpegHeaderError("too_small", f"frame of {w}×{h} pixels is too small to analyse")
    if w * h > MAX_FRAME_PIXELS or max(w, h) > MAX_FRAME_SIDE:
        raise JpegHeaderError("too_large", f"frame of {w}×{h} pixels exceeds the limit")
    return w, h


def _sof(data: bytes, i: int) -> tuple[int, int]:
    """Width and height of the frame header whose length field starts at byte ``i``."""
    if i + 8 > len(data):
        raise JpegHeaderError("corrupt", "JPEG frame header is cut short")
    length = int.from_bytes(data[i : i + 2], "big")
    height = int.from_bytes(data[i + 3 : i + 5], "big")
    width = int.from_bytes(data[i + 5 : i + 7], "big")
    components = data[i + 7]
    # libjpeg refuses a header whose length disagrees with its component count, and a zero size
    # (a height given later in a DNL marker, which it does not support).
    if components == 0 or length != 8 + 3 * components or width == 0 or height == 0:
        raise JpegHeaderError("corrupt", "JPEG frame header is malformed")
    return width, height
