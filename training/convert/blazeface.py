"""Convert MediaPipe's BlazeFace face detectors (.tflite) into ClassPulse ONNX files.

    pip install -e '.[convert]'
    python -m training.convert.blazeface --variant full_range --out models/face_detection_full_range.onnx
    python -m training.convert.blazeface --variant short_range --out models/face_detection_short_range.onnx

Source: npm ``@mediapipe/face_detection@0.4.1657300184`` (Apache-2.0, Google LLC),
``face_detection_full_range.tflite`` and ``face_detection_short_range.tflite`` (float16 weights
with DEQUANTIZE ops; the full-range graph the package runs on the CPU is the ``_sparse`` copy
of the same network, the dense one is converted here).

Step 1, the graph: ``tflite2onnx==0.4.1`` (the ``convert`` extra). If the running Python can
import it, it is used directly; otherwise this module makes a throwaway virtual environment in a
temporary folder, installs ``tflite2onnx==0.4.1`` there with pip and runs it in a subprocess, so
the project's environment never gets tflite/flatbuffers. tflite2onnx 0.4.1 works with numpy 2
and onnx 1.2x (checked with numpy 2.4.6, onnx 1.23.2). It writes opset 11, dequantizes the
float16 weights to float32 initializers, and turns the NHWC TFLite graph into an NCHW ONNX graph:
the ONNX input is ``[1, 3, S, S]`` (NCHW, NOT the TFLite NHWC), which is what the contract says.

Step 2, post-processing with onnx (this module):

* the input is named ``input``; the outputs ``regressors`` ``[batch, A, 16]`` and ``scores``
  ``[batch, A, 1]`` (raw logits; score = sigmoid(clip(logit, ±100)) as MediaPipe does);
* the batch dimension is made dynamic (``batch``). tflite2onnx bakes batch 1 into two places:
  the output Reshapes (shape ``[1, -1, k]`` → ``[0, -1, k]``, 0 = copy the batch dimension) and the
  full-range model's three Resize ops (``sizes = [1, C, H, W]`` → ``scales = [1, 1, 2, 2]``; with
  ``half_pixel`` coordinates and an exact 2× factor the result is identical);
* the contract of ``classpulse.modelmeta`` goes into the metadata.

The anchor and decoding parameters written into the contract (``detector``) were checked
against the MediaPipe graphs compiled into this package's wasm (FaceDetectionFullRange /
FaceDetectionShortRange options: tensor size, num_layers, strides,
interpolated_scale_aspect_ratio, x/y/w/h scale, min_score_thresh; TensorsToDetections:
num_coords 16, 6 keypoints, sigmoid, score clipping 100; NonMaxSuppression: weighted, IoU 0.3).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import venv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from classpulse.modelmeta import ModelContract
from training.convert.common import PinnedSource, fetch_member, save_onnx

TFLITE2ONNX = "tflite2onnx==0.4.1"
NPM_PACKAGE, NPM_VERSION = "@mediapipe/face_detection", "0.4.1657300184"
NPM_TARBALL_SHA256 = "a118cde74923dc4435257fbfbb613464a0f58d115dff6314d4ff96c8aebf6419"
ATTRIBUTION = "Google LLC (MediaPipe)"
KEYPOINTS = [
    "right_eye",
    "left_eye",
    "nose_tip",
    "mouth_centre",
    "right_ear_tragion",
    "left_ear_tragion",
]


def _source(file: str, sha256: str) -> PinnedSource:
    return PinnedSource(
        registry="npm",
        package=NPM_PACKAGE,
        version=NPM_VERSION,
        archive_sha256=NPM_TARBALL_SHA256,
        member=f"package/{file}",
        member_sha256=sha256,
        licence="Apache-2.0",
        attribution=ATTRIBUTION,
    )


@dataclass(frozen=True)
class Variant:
    name: str
    size: int
    strides: list[int]
    anchors_per_stride: list[int]
    num_anchors: int
    min_score_thresh: float
    source: PinnedSource
    extra: dict[str, Any] = field(default_factory=dict)

    def detector(self) -> dict[str, Any]:
        return {
            "strides": self.strides,
            "anchors_per_stride": self.anchors_per_stride,
            "anchor_offset": 0.5,
            "num_anchors": self.num_anchors,
            "num_coords": 16,
            "num_keypoints": 6,
            "keypoints": KEYPOINTS,
            "regressor_scale": self.size,
            "letterbox": True,
            "score_clip": 100.0,
            "min_score_thresh": self.min_score_thresh,
            "nms": {"algorithm": "weighted", "iou_threshold": 0.3},
            "outputs": {"regressors": "regressors", "scores": "scores"},
        }

    def contract(self) -> ModelContract:
        return ModelContract(
            kind="face_detector",
            name=f"blazeface_{self.name}",
            version=f"mediapipe-{NPM_VERSION}",
            input_name="input",
            input_height=self.size,
            input_width=self.size,
            layout="NCHW",  # tflite2onnx transposes the NHWC TFLite input; verified in the graph
            colour="rgb",
            mean=127.5,
            std=127.5,
            output="regressors+logits",
            detector=self.detector(),
            source=self.source.provenance(),
        )


VARIANTS: dict[str, Variant] = {
    # MediaPipe FaceDetectionFullRange: 192×192, num_layers 1, strides [4],
    # interpolated_scale_aspect_ratio 0 → 1 anchor per cell: 48×48 = 2304 anchors.
    "full_range": Variant(
        "full_range",
        192,
        [4],
        [1],
        2304,
        0.6,
        _source(
            "face_detection_full_range.tflite",
            "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
        ),
    ),
    # MediaPipe FaceDetectionShortRange: 128×128, num_layers 4, strides [8, 16, 16, 16],
    # interpolated_scale_aspect_ratio 1 → 2 anchors per layer and cell; equal strides merge:
    # 16×16×2 + 8×8×6 = 896 anchors.
    "short_range": Variant(
        "short_range",
        128,
        [8, 16, 16, 16],
        [2, 2, 2, 2],
        896,
        0.5,
        _source(
            "face_detection_short_range.tflite",
            "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
        ),
    ),
}


def _tflite2onnx_python(tmp: Path) -> str:
    """A Python that can import tflite2onnx: this one, or a throwaway venv made in ``tmp``."""
    if importlib.util.find_spec("tflite2onnx") is not None:
        return sys.executable
    env_dir = tmp / "tflite2onnx-venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", TFLITE2ONNX],
        check=True,
    )
    return str(py)


def run_tflite2onnx(tflite: Path, onnx_out: Path, tmp: Path) -> None:
    py = _tflite2onnx_python(tmp)
    code = "import sys, tflite2onnx; tflite2onnx.convert(sys.argv[1], sys.argv[2])"
    # tflite2onnx prints one "float16 not supported/tested" warning per weight: the .tflite
    # stores float16 weights behind DEQUANTIZE ops, which it folds into float32 initializers
    # correctly (parity with the TFLite interpreter is checked in tests). Keep the log quiet
    # unless it fails.
    proc = subprocess.run(
        [py, "-c", code, str(tflite), str(onnx_out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise RuntimeError(f"tflite2onnx failed on {tflite.name} (exit {proc.returncode})")


def postprocess(model: Any, variant: Variant) -> Any:
    """Rename input/outputs, make the batch dynamic, check the shapes; returns the model."""
    import numpy as np
    import onnx
    from onnx import numpy_helper, shape_inference

    graph = model.graph
    inferred = shape_inference.infer_shapes(model, strict_mode=True).graph
    static = {
        vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
        for vi in list(inferred.value_info) + list(inferred.input) + list(inferred.output)
    }
    inits = {t.name: t for t in graph.initializer}

    def rename(old: str, new: str) -> None:
        for node in graph.node:
            node.input[:] = [new if t == old else t for t in node.input]
            node.output[:] = [new if t == old else t for t in node.output]

    if len(graph.input) != 1:
        raise ValueError("expected one graph input")
    old_in = graph.input[0].name
    in_shape = static[old_in]
    if in_shape != [1, 3, variant.size, variant.size]:
        raise ValueError(f"unexpected tflite2onnx input shape {in_shape} (NCHW expected)")
    rename(old_in, "input")
    graph.input[0].name = "input"

    out_names = {}
    for out in graph.output:
        dims = static[out.name]
        if dims == [1, variant.num_anchors, 16]:
            out_names[out.name] = "regressors"
        elif dims == [1, variant.num_anchors, 1]:
            out_names[out.name] = "scores"
        else:
            raise ValueError(f"unexpected output {out.name} {dims}")
    for old, new in out_names.items():
        rename(old, new)
    for out in graph.output:
        out.name = out_names[out.name]

    # Batch 1 baked into Reshape shapes: [1, -1, k] -> [0, -1, k] (0 copies the batch dim).
    for node in graph.node:
        if node.op_type == "Reshape":
            shape_init = inits[node.input[1]]
            shape = numpy_helper.to_array(shape_init).copy()
            if shape[0] == 1:
                shape[0] = 0
                shape_init.CopyFrom(
                    numpy_helper.from_array(shape.astype(np.int64), shape_init.name)
                )
        elif node.op_type == "Resize":
            # sizes [1, C, H, W] pin the batch; use the equivalent exact scales instead.
            sizes_name = node.input[3] if len(node.input) > 3 else ""
            if not sizes_name:
                continue
            sizes = numpy_helper.to_array(inits[sizes_name]).astype(np.int64)
            src = static[node.input[0]]
            if sizes[0] != src[0] or sizes[1] != src[1]:
                raise ValueError(f"{node.name}: resize changes batch/channels")
            scales = np.array([1.0, 1.0, sizes[2] / src[2], sizes[3] / src[3]], np.float32)
            if not np.all(scales * np.array(src, np.float32) == sizes):
                raise ValueError(f"{node.name}: sizes {sizes} not an exact multiple of {src}")
            scales_name = f"{node.name}/scales"
            graph.initializer.append(numpy_helper.from_array(scales, scales_name))
            node.input[:] = [node.input[0], node.input[1], scales_name]

    for vi in list(graph.input) + list(graph.output):
        dim0 = vi.type.tensor_type.shape.dim[0]
        dim0.Clear()
        dim0.dim_param = "batch"
    del graph.value_info[:]  # stale static shapes; inference recomputes them
    # Drop initializers no node uses any more (the old Resize sizes), and sort the rest by name:
    # tflite2onnx emits them in set (hash-seed dependent) order, which would make every
    # conversion a different file. Sorted, the output is byte-for-byte reproducible.
    used = {t for node in graph.node for t in node.input}
    keep = sorted((t for t in graph.initializer if t.name in used), key=lambda t: t.name)
    del graph.initializer[:]
    graph.initializer.extend(keep)
    graph.name = f"blazeface_{variant.name}"
    model.doc_string = (
        f"BlazeFace {variant.name} from {variant.source.spec} "
        f"{variant.source.member} (sha256 {variant.source.member_sha256}), "
        f"converted with {TFLITE2ONNX}; batch made dynamic."
    )
    model.producer_name, model.producer_version = "classpulse.training.convert", "1"
    onnx.checker.check_model(model, full_check=True)
    return model


def convert(variant: str, out: str | Path, source: str | Path | None = None) -> str:
    """Fetch (or take ``source``, the npm tarball), convert, save; return the sha256."""
    import onnx

    spec = VARIANTS[variant]
    with tempfile.TemporaryDirectory(prefix="classpulse-blazeface-") as tmp:
        tmp = Path(tmp)
        tflite = fetch_member(spec.source, tmp, source)
        raw = tmp / f"{variant}.raw.onnx"
        run_tflite2onnx(tflite, raw, tmp)
        model = postprocess(onnx.load(str(raw)), spec)
    digest = save_onnx(model, out, spec.contract())
    print(f"{out}: sha256 {digest}")
    return digest


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Convert MediaPipe BlazeFace .tflite to ONNX.")
    ap.add_argument("--variant", choices=sorted(VARIANTS), default="full_range")
    ap.add_argument("--out", help="default: models/face_detection_<variant>.onnx")
    ap.add_argument("--source", help="a local copy of the npm tarball instead of fetching it")
    args = ap.parse_args(argv)
    convert(args.variant, args.out or f"models/face_detection_{args.variant}.onnx", args.source)


if __name__ == "__main__":
    main()
