"""What a student page loads for edge capture, served by the real app: the vendored
onnxruntime-web (checksums as recorded, the wasm served gzip-encoded with long-lived caching),
the detectors (allow-listed) and their contracts, read from the ONNX metadata without onnx; and
the join page's CSP, which allows WebAssembly and nothing more."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import asdict

import onnx
import onnxruntime
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.routes.edge_files import EDGE_MODELS, ORT_DIR, ORT_WASM_GZ, ORT_WASM_URL, ORT_WEB_VERSION
from classpulse import contracts
from classpulse.modelmeta import ModelContract, ModelContractError, read_onnx_metadata
from classpulse.settings import REPO_ROOT, Settings

VENDOR = REPO_ROOT / "web" / "static" / "vendor"
MODELS = REPO_ROOT / "models"
RAW_WASM = "ort-wasm-simd-threaded.wasm"


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def recorded() -> dict[str, tuple[int, str]]:
    """(bytes, sha256) per file of web/static/vendor/README.md's onnxruntime-web table."""
    out = {}
    for line in (VENDOR / "README.md").read_text(encoding="utf-8").splitlines():
        m = re.match(
            r"\| `(?:onnxruntime-web/)?([^`]+)`.*\| ([\d,]+) \| `([0-9a-f]{64})` \|$", line
        )
        if m:
            out[m.group(1)] = (int(m.group(2).replace(",", "")), m.group(3))
    return out


def test_vendored_runtime_matches_its_recorded_checksums() -> None:
    table = recorded()
    committed = sorted(p.name for p in ORT_DIR.iterdir())
    assert committed == sorted(set(table) - {RAW_WASM})  # every file listed, nothing else
    for name in committed:
        data = (ORT_DIR / name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == table[name], name
    raw = gzip.decompress(ORT_WASM_GZ.read_bytes())
    assert (len(raw), hashlib.sha256(raw).hexdigest()) == table[RAW_WASM]
    assert raw[:4] == b"\0asm"
    # The version the route serves under is the vendored one (the page builds the URL from the
    # runtime's own ort.env.versions.web).
    banner = (ORT_DIR / "ort.wasm.min.js").read_text(encoding="utf-8")[:200]
    assert f"ONNX Runtime Web v{ORT_WEB_VERSION}" in banner
    assert "MIT License" in (REPO_ROOT / "LICENSES" / "onnxruntime-web-MIT.txt").read_text()


def test_wasm_is_served_gzip_encoded_and_cached_for_good(client: TestClient) -> None:
    with client.stream("GET", ORT_WASM_URL, headers={"Accept-Encoding": "gzip, br"}) as r:
        assert r.status_code == 200
        wire = b"".join(r.iter_raw())  # the bytes as sent, before httpx decodes them
        headers = r.headers
    assert headers["content-encoding"] == "gzip"
    assert headers["content-type"] == "application/wasm"
    assert headers["cache-control"] == "public, max-age=31536000, immutable"
    assert "accept-encoding" in headers["vary"].lower()
    assert int(headers["content-length"]) == len(wire) < 5_000_000
    assert hashlib.sha256(gzip.decompress(wire)).hexdigest() == recorded()[RAW_WASM][1]

    # Never inflated here (14 MB per request): a client that refuses gzip is told why.
    for refusing in ("identity", "gzip;q=0, identity", "br", "gzip; q=0.0"):
        r = client.get(ORT_WASM_URL, headers={"Accept-Encoding": refusing})
        assert r.status_code == 406, refusing
        assert "gzip" in r.text and "accept-encoding" in r.headers["vary"].lower()
        assert "immutable" not in r.headers.get("cache-control", "")
    # No Accept-Encoding at all means any coding (RFC 9110): the stored gzip, as to browsers.
    for taking in (None, "*", "deflate, gzip;q=0.5", "GZIP"):
        headers = {"Accept-Encoding": taking} if taking else {}
        req = client.build_request("GET", ORT_WASM_URL, headers=headers)
        if taking is None:
            del req.headers["accept-encoding"]  # httpx adds its own
        r = client.send(req, stream=True)
        wire = b"".join(r.iter_raw())
        r.close()
        assert r.status_code == 200 and r.headers["content-encoding"] == "gzip", taking
        assert wire == ORT_WASM_GZ.read_bytes()
    assert client.get(ORT_WASM_URL.replace(ORT_WEB_VERSION, "0.0.1")).status_code == 404


def test_runtime_scripts_are_static_files(client: TestClient) -> None:
    for name in ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs"):
        r = client.get(f"/static/vendor/onnxruntime-web/{name}")
        assert r.status_code == 200 and "javascript" in r.headers["content-type"], name
        assert r.content == (ORT_DIR / name).read_bytes()


def test_only_the_detectors_are_served(client: TestClient) -> None:
    assert contracts.EDGE_DETECTOR_URL in {f"/models/{name}.onnx" for name in EDGE_MODELS}
    for name in sorted(EDGE_MODELS):
        r = client.get(f"/models/{name}.onnx")
        assert r.status_code == 200
        assert r.content == (MODELS / f"{name}.onnx").read_bytes()
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers["cache-control"] == "public, max-age=86400" and r.headers["etag"]
    for path in (
        "/models/emotion_mini_xception.onnx",  # a model, but not one pages run
        "/models/emotion_mini_xception.json",
        "/models/..%2Fpyproject.onnx",
        "/models/face_detection_short_range.tflite",
    ):
        assert client.get(path).status_code == 404, path


def test_detector_contract_is_the_one_the_worker_reads(client: TestClient) -> None:
    for name in sorted(EDGE_MODELS):
        path = MODELS / f"{name}.onnx"
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        worker = ModelContract.from_metadata(session.get_modelmeta().custom_metadata_map)
        r = client.get(f"/models/{name}.json")
        assert r.status_code == 200 and r.headers["cache-control"] == "public, max-age=86400"
        assert r.json() == json.loads(json.dumps(asdict(worker)))
        assert r.json()["detector"]["anchors_per_stride"] and r.json()["layout"] == "NCHW"


def test_metadata_reader_agrees_with_onnx(tmp_path) -> None:
    for path in sorted(MODELS.glob("*.onnx")):
        expected = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert read_onnx_metadata(path) == expected, path.name
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes((MODELS / "face_detection_short_range.onnx").read_bytes()[:100_000])
    with pytest.raises(ModelContractError):
        read_onnx_metadata(truncated)


def test_only_the_join_page_may_compile_webassembly(client: TestClient) -> None:
    join = client.get("/join/ABCD2345").headers["content-security-policy"]
    script_src = next(d for d in join.split(";") if d.strip().startswith("script-src"))
    assert script_src.split() == ["script-src", "'self'", "'wasm-unsafe-eval'"]
    for path in ("/login", "/sessions", "/privacy"):
        csp = client.get(path).headers["content-security-policy"]
        assert "wasm" not in csp and "script-src 'self';" in csp, path
    body = client.get("/join/ABCD2345").text
    assert body.index("/static/js/edge.js") < body.index("/static/js/student.js")
    for hook in ("capture-mode", "capture-kind", "detector-time"):
        assert f'id="{hook}"' in body, hook
