"""Files a student page needs for edge capture: the face detectors, their contracts and the
WebAssembly runtime (onnxruntime-web) that runs them in the browser.

The runtime's wasm is committed gzip-compressed (14 MB raw, 3.7 MB gzipped) and served as it is
stored, with ``Content-Encoding: gzip``; its URL carries the vendored version, so browsers may
keep it for a year. It is never inflated here: a client that refuses gzip gets 406 with a
message (every browser that runs WebAssembly accepts gzip; one inflated copy per request cost
14 MB of memory each). Large files (the runtime, the detectors) stream in at most
``MAX_STREAMS`` responses at once, each cut after ``STREAM_DEADLINE_S``: beyond, 503 with
``Retry-After``, so stalled readers hold neither memory nor every slot for ever. The detector contract is read from the ONNX file's own metadata (the same
contract the worker reads), without onnx or onnxruntime: the gateway imports neither.
"""

from __future__ import annotations

from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, HTTPException
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from app.deps import SettingsDep
from app.resources import STATIC_DIR
from classpulse.modelmeta import ModelContract, read_onnx_metadata

router = APIRouter(include_in_schema=False)

# The vendored onnxruntime-web (web/static/vendor/README.md); the page builds the
# same URL from the loaded runtime's own version (ort.env.versions.web), tests/test_edge_files.py
# checks that the two agree.
ORT_WEB_VERSION = "1.30.0"
ORT_DIR = STATIC_DIR / "vendor" / "onnxruntime-web"
ORT_WASM_GZ = ORT_DIR / "ort-wasm-simd-threaded.wasm.gz"
ORT_WASM_URL = f"/vendor/onnxruntime-web/{ORT_WEB_VERSION}/ort-wasm-simd-threaded.wasm"
IMMUTABLE = "public, max-age=31536000, immutable"
# Detectors a page may load: allow-listed, never a path from the request.
EDGE_MODELS = frozenset({"face_detection_short_range", "face_detection_full_range"})
# Model files keep their names across releases: cached for a day, revalidated by ETag after.
MODEL_CACHE = "public, max-age=86400"

# Large-file responses streaming at once (per gateway process). Each holds about one 64 KiB
# chunk and the transport's write buffer while its reader is slow; 64 cover a class joining at
# once (on a school LAN a download takes well under a second; browsers then keep the file).
MAX_STREAMS = 64
# A response still streaming after this is cut (the connection closed): 3.7 MB in 120 s is
# 30 KB/s, slower than any link a student page can work over.
STREAM_DEADLINE_S = 120.0
RETRY_AFTER_S = 5
NO_GZIP = (
    "This file is served gzip-compressed only (Content-Encoding: gzip), and this request refused "
    "gzip. Send 'Accept-Encoding: gzip' (every browser that runs WebAssembly does), or fetch it "
    "with gzip and decompress it yourself.\n"
)


def _accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether gzip may be sent. No Accept-Encoding at all means any coding (RFC 9110 §12.5.3);
    otherwise gzip (or ``*``) must be listed without ``q=0``."""
    if accept_encoding is None:
        return True
    for part in accept_encoding.lower().split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip() in ("gzip", "*"):
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


class _Slots:
    """Large-file responses streaming now in this process (the event loop's only: no lock)."""

    busy = 0


class BoundedFileResponse(FileResponse):
    """A FileResponse that holds one of ``MAX_STREAMS`` slots while it streams: none free, a 503
    with Retry-After instead; still streaming after ``STREAM_DEADLINE_S``, cut."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if _Slots.busy >= MAX_STREAMS:
            busy = PlainTextResponse(
                "Too many downloads at once: try again in a few seconds.\n",
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER_S), "Cache-Control": "no-store"},
            )
            await busy(scope, receive, send)
            return
        _Slots.busy += 1
        try:
            # Cut: the response stays incomplete and the server closes the connection.
            with anyio.move_on_after(STREAM_DEADLINE_S):
                await super().__call__(scope, receive, send)
        finally:
            _Slots.busy -= 1


@router.get(ORT_WASM_URL)
def ort_wasm(
    accept_encoding: Annotated[str | None, Header()] = None,
) -> Response:
    """onnxruntime-web's WebAssembly binary, gzip-encoded as stored (every browser accepts it);
    406 to a client that refuses gzip, never inflated here."""
    if not _accepts_gzip(accept_encoding):
        return PlainTextResponse(NO_GZIP, status_code=406, headers={"Vary": "Accept-Encoding"})
    return BoundedFileResponse(
        ORT_WASM_GZ,
        media_type="application/wasm",
        headers={"Cache-Control": IMMUTABLE, "Vary": "Accept-Encoding", "Content-Encoding": "gzip"},
    )


def _model_path(models_dir: Path, name: str, suffix: str) -> Path:
    path = models_dir / f"{name}.onnx"
    if name not in EDGE_MODELS or not path.is_file():
        raise HTTPException(status_code=404, detail=f"no model {name}{suffix}")
    return path


@router.get("/models/{name}.onnx")
def edge_model(name: str, settings: SettingsDep) -> FileResponse:
    """A face detector's ONNX file, for the page to run (edge capture)."""
    path = _model_path(settings.models_dir, name, ".onnx")
    return BoundedFileResponse(
        path, media_type="application/octet-stream", headers={"Cache-Control": MODEL_CACHE}
    )


@lru_cache(maxsize=8)
def _contract(stamp: tuple[Path, int, int]) -> dict[str, Any]:
    """The contract of the file (path, mtime, size): a replaced model file is read again."""
    return asdict(ModelContract.from_metadata(read_onnx_metadata(stamp[0])))


@router.get("/models/{name}.json")
def edge_model_contract(name: str, settings: SettingsDep) -> JSONResponse:
    """The detector's contract (input size, layout, normalisation, anchors, thresholds, NMS),
    from the ONNX file's metadata: onnxruntime-web does not expose custom metadata."""
    path = _model_path(settings.models_dir, name, ".json")
    stat = path.stat()
    return JSONResponse(
        _contract((path, stat.st_mtime_ns, stat.st_size)), headers={"Cache-Control": MODEL_CACHE}
    )
