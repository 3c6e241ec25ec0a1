"""Files a student page needs for edge capture: the face detectors, their contracts and the
WebAssembly runtime (onnxruntime-web) that runs them in the browser.

The runtime's wasm is committed gzip-compressed (14 MB raw, 3.7 MB gzipped) and served as it is
stored, with ``Content-Encoding: gzip``; its URL carries the vendored version, so browsers may
keep it for a year. The detector contract is read from the ONNX file's own metadata (the same
contract the worker reads), without onnx or onnxruntime: the gateway imports neither.
"""

from __future__ import annotations

import gzip
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException
from fastapi.responses import FileResponse, JSONResponse, Response

from app.deps import SettingsDep
from app.resources import STATIC_DIR
from classpulse.modelmeta import ModelContract, read_onnx_metadata

router = APIRouter(include_in_schema=False)

# The vendored onnxruntime-web (web/static/vendor/onnxruntime-web/README.md); the page builds the
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


def _accepts_gzip(accept_encoding: str | None) -> bool:
    for part in (accept_encoding or "").lower().split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip() in ("gzip", "*"):
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


@router.get(ORT_WASM_URL)
def ort_wasm(
    accept_encoding: Annotated[str | None, Header()] = None,
) -> Response:
    """onnxruntime-web's WebAssembly binary, gzip-encoded as stored (every browser accepts it)."""
    headers = {"Cache-Control": IMMUTABLE, "Vary": "Accept-Encoding"}
    if _accepts_gzip(accept_encoding):
        return FileResponse(
            ORT_WASM_GZ,
            media_type="application/wasm",
            headers={**headers, "Content-Encoding": "gzip"},
        )
    # A client without gzip (a script, a proxy): decompressed here, in the thread pool.
    return Response(
        gzip.decompress(ORT_WASM_GZ.read_bytes()), media_type="application/wasm", headers=headers
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
    return FileResponse(
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
