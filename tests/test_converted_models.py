"""The committed ONNX models: contract, dynamic batch, and parity with the original runtimes.

The reference outputs under tests/data/reference/ were computed once by the ORIGINAL runtimes
(Keras for mini-Xception, the TensorFlow Lite interpreter for BlazeFace) with
``training/convert/reference.py``; see its docstring for the exact command.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from classpulse.modelmeta import ModelContract

ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
REF = Path(__file__).resolve().parent / "data" / "reference"

CLASSIFIER = "emotion_mini_xception.onnx"
BIG = "emotion_big_xception.onnx"
DETECTORS = {
    "face_detection_full_range.onnx": ("full_range", 192, 2304),
    "face_detection_short_range.onnx": ("short_range", 128, 896),
}
ALL = [CLASSIFIER, BIG, *DETECTORS]


def _session(name: str) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(MODELS / name), opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def sessions() -> dict[str, ort.InferenceSession]:
    return {name: _session(name) for name in ALL}


def _contract(sess: ort.InferenceSession) -> ModelContract:
    return ModelContract.from_metadata(sess.get_modelmeta().custom_metadata_map)


def _normalise(x: np.ndarray, c: ModelContract) -> np.ndarray:
    return ((x.astype(np.float32) - np.float32(c.mean)) / np.float32(c.std)).astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x.astype(np.float64), -100, 100)))


@pytest.mark.parametrize("name", ALL)
def test_model_loads_with_contract(sessions, name):
    sess = sessions[name]
    c = _contract(sess)
    (inp,) = sess.get_inputs()
    assert inp.name == c.input_name == "input"
    assert inp.shape[0] == "batch"  # dynamic batch
    if c.layout == "NHWC":
        assert inp.shape[1:] == [c.input_height, c.input_width, c.channels]
    else:
        assert inp.shape[1:] == [c.channels, c.input_height, c.input_width]
    assert c.source["sha256"] and c.source["licence"] and c.source["attribution"]
    assert "://" not in repr(c.source)  # provenance names packages, not hosts


@pytest.mark.parametrize("name", [CLASSIFIER, BIG])
def test_classifier_contract(sessions, name):
    sess = sessions[name]
    c = _contract(sess)
    assert c.kind == "emotion_classifier" and c.output == "probabilities"
    assert c.labels == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert (c.layout, c.colour, c.mean, c.std) == ("NHWC", "grey", 127.5, 127.5)
    assert [o.name for o in sess.get_outputs()] == ["probs"]
    assert sess.get_outputs()[0].shape == ["batch", 7]


@pytest.mark.parametrize("name", list(DETECTORS))
def test_detector_contract(sessions, name):
    variant, size, anchors = DETECTORS[name]
    sess = sessions[name]
    c = _contract(sess)
    assert c.kind == "face_detector" and c.output == "regressors+logits"
    assert (c.input_height, c.input_width, c.colour, c.layout) == (size, size, "rgb", "NCHW")
    d = c.detector
    assert d["outputs"] == {"regressors": "regressors", "scores": "scores"}
    assert d["regressor_scale"] == size and d["num_coords"] == 16 and d["num_keypoints"] == 6
    # The anchor layout must produce exactly as many anchors as the model has outputs.
    n = sum(
        (size // s) ** 2 * k for s, k in zip(d["strides"], d["anchors_per_stride"], strict=True)
    )
    assert n == anchors == d["num_anchors"]
    outs = {o.name: o.shape for o in sess.get_outputs()}
    assert outs == {"regressors": ["batch", anchors, 16], "scores": ["batch", anchors, 1]}


def test_classifier_initializer_names():
    onnx = pytest.importorskip("onnx")
    names = {t.name for t in onnx.load(str(MODELS / CLASSIFIER)).graph.initializer}
    want = {"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "head.weight", "head.bias"}
    for i in range(1, 5):
        for sep in ("sep1", "sep2"):
            want |= {
                f"block{i}.{sep}.depthwise.weight",
                f"block{i}.{sep}.pointwise.weight",
                f"block{i}.{sep}.pointwise.bias",
            }
        want |= {f"block{i}.shortcut.weight", f"block{i}.shortcut.bias"}
    assert names == want


def test_mini_xception_matches_keras(sessions):
    sess = sessions[CLASSIFIER]
    c = _contract(sess)
    ref = np.load(REF / "mini_xception_keras.npz")
    assert str(ref["source_sha256"]) == c.source["sha256"]
    x = _normalise(ref["inputs"], c)[..., None]
    probs = sess.run(["probs"], {"input": x})[0]
    err = float(np.abs(probs - ref["probs"]).max())
    assert err <= 1e-5, f"max |dp| {err:.3g}"
    assert np.array_equal(probs.argmax(1), ref["probs"].argmax(1))  # 100% top-1 agreement
    assert len(x) >= 100


def test_mini_xception_dynamic_batch(sessions):
    sess = sessions[CLASSIFIER]
    c = _contract(sess)
    x = _normalise(np.load(REF / "mini_xception_keras.npz")["inputs"][:64], c)[..., None]
    full = sess.run(["probs"], {"input": x})[0]
    for n in (1, 7):
        part = sess.run(["probs"], {"input": x[:n]})[0]
        np.testing.assert_allclose(part, full[:n], rtol=0, atol=1e-6)
    np.testing.assert_allclose(full.sum(1), 1.0, atol=1e-5)


def test_big_xception_matches_tfjs(sessions):
    sess = sessions[BIG]
    c = _contract(sess)
    ref = np.load(REF / "big_xception_tfjs.npz")
    assert str(ref["source_sha256"]) == c.source["sha256"]
    assert str(ref["weights_sha256"]) == c.source["weights_sha256"]
    # Same crops as the mini-Xception reference (stored once).
    x = _normalise(np.load(REF / "mini_xception_keras.npz")["inputs"], c)[..., None]
    probs = sess.run(["probs"], {"input": x})[0]
    err = float(np.abs(probs - ref["probs"]).max())
    assert err <= 1e-5, f"max |dp| {err:.3g}"
    assert np.array_equal(probs.argmax(1), ref["probs"].argmax(1))
    one = sess.run(["probs"], {"input": x[3:4]})[0]
    np.testing.assert_allclose(one[0], probs[3], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", list(DETECTORS))
def test_blazeface_matches_tflite(sessions, name):
    variant, size, anchors = DETECTORS[name]
    sess = sessions[name]
    c = _contract(sess)
    ref = np.load(REF / f"blazeface_{variant}_tflite.npz")
    assert str(ref["source_sha256"]) == c.source["sha256"]
    x = _normalise(ref["inputs"], c).transpose(0, 3, 1, 2)  # stored NHWC RGB uint8 -> NCHW
    reg, logits = sess.run(["regressors", "scores"], {"input": x})  # batch of 4 at once
    assert reg.shape == (len(x), anchors, 16) and logits.shape == (len(x), anchors, 1)
    score_err = float(np.abs(_sigmoid(logits[..., 0]) - _sigmoid(ref["logits"])).max())
    assert score_err <= 1e-4, f"max |d score| {score_err:.3g}"
    top = ref["top_index"]
    got = np.take_along_axis(reg, top[..., None].astype(np.int64), axis=1)
    reg_err = float(np.abs(got - ref["top_regressors"]).max())  # in input pixels
    assert reg_err <= 1e-2, f"max |d regressor| {reg_err:.3g} px"
    # Batch 1 gives the same rows as the batch of four.
    one = sess.run(["regressors", "scores"], {"input": x[1:2]})
    np.testing.assert_allclose(one[0][0], reg[1], rtol=0, atol=1e-4)
    np.testing.assert_allclose(one[1][0], logits[1], rtol=0, atol=1e-5)


def test_readme_sha256_matches_files():
    text = (MODELS / "README.md").read_text(encoding="utf-8")
    onnx_files = sorted(p.name for p in MODELS.glob("*.onnx"))
    assert onnx_files, "no models committed"
    for name in onnx_files:
        digest = hashlib.sha256((MODELS / name).read_bytes()).hexdigest()
        rows = [line for line in text.splitlines() if line.startswith("|") and f"`{name}`" in line]
        assert rows, f"models/README.md has no table row for {name}"
        listed = set(re.findall(r"\b[0-9a-f]{64}\b", " ".join(rows)))
        assert digest in listed, f"models/README.md lists no sha256 {digest} for {name}"
