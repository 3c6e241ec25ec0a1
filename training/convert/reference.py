"""Compute the reference outputs of the ORIGINAL runtimes, stored under tests/data/reference/.

Run once, in a throwaway virtual environment that has the original runtimes (never in the
project's own environment; TensorFlow is not a ClassPulse dependency):

    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install tensorflow-cpu scikit-image h5py   # used: tensorflow-cpu 2.21.0,
                                                                    # keras 3.15.1, skimage 0.26.0
    cd <repo root>
    /tmp/refvenv/bin/python -m training.convert.reference --out tests/data/reference

What it writes (npz, compressed, each well under 1 MB):

* ``mini_xception_keras.npz``: ``inputs`` uint8 (N, 64, 64) grey crops and ``probs`` float32
  (N, 7) from Keras (``keras.models.load_model(hdf5, compile=False)``) on
  ``(x - 127.5) / 127.5``. The crops are ~160 real faces from scikit-image's ``astronaut.png``
  and ``camera.png`` with random shifts, scales, flips, small rotations and brightness changes
  (seeded), plus a few non-face crops.
* ``blazeface_{full_range,short_range}_tflite.npz``: ``inputs`` uint8 (M, S, S, 3) letterboxed
  RGB images, ``logits`` float32 (M, A) raw scores, and ``top_index`` int32 (M, K) /
  ``top_regressors`` float32 (M, K, 16): the raw regressors of the K highest-scoring anchors
  (all regressors of all anchors would exceed the 1 MB budget). Computed by TensorFlow Lite's
  interpreter (``tf.lite.Interpreter``, default CPU kernels incl. XNNPACK) on
  ``(x - 127.5) / 127.5``.

* ``big_xception_tfjs.npz``: ``probs`` float32 (N, 7) of ``@vladmandic/human``'s emotion model
  run by TensorFlow.js itself (``@tensorflow/tfjs`` 4.22.0, pure-JS CPU backend, under node) on
  the SAME crops as ``mini_xception_keras.npz`` (inputs not stored twice). Needs ``--tfjs-dir``,
  a folder where ``npm install @tensorflow/tfjs@4.22.0`` was run (node and npm on PATH)::

      mkdir /tmp/tfjsref && (cd /tmp/tfjsref && npm init -y && npm install @tensorflow/tfjs@4.22.0)
      /tmp/refvenv/bin/python -m training.convert.reference --tfjs-dir /tmp/tfjsref

The ``sha256`` of every source file used is stored in each npz (``source_sha256``) so a test can
tell which source the references belong to.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from training.convert import blazeface, fer_mini_xception, human_emotion
from training.convert.common import fetch_archive, fetch_member, read_member

SEED = 20240611
# Face boxes (x, y, size) in the 512×512 scikit-image pictures, found once by hand / Haar.
FACES = {"astronaut": (177, 62, 100), "camera": (160, 68, 112)}
# Non-face crops (image, x, y, size): backgrounds, objects, a cat.
NON_FACES = [
    ("camera", 330, 20, 120),
    ("camera", 20, 380, 100),
    ("astronaut", 380, 300, 120),
    ("coffee", 150, 100, 200),
    ("chelsea", 140, 40, 160),
    ("rocket", 250, 100, 150),
    ("brick", 100, 100, 200),
    ("coins", 50, 50, 120),
    ("moon", 200, 200, 150),
    ("text", 20, 20, 100),
    ("grass", 0, 0, 256),
    ("page", 0, 0, 160),
]
TOP_K = 256


def grey(image: np.ndarray) -> np.ndarray:
    """uint8 RGB/grey -> float grey in [0, 255], ITU-R 601 weights (as OpenCV)."""
    if image.ndim == 2:
        return image.astype(np.float64)
    image = image[..., :3].astype(np.float64)
    return image @ np.array([0.299, 0.587, 0.114])


def crop(
    image: np.ndarray,
    cx: float,
    cy: float,
    size: float,
    angle_deg: float = 0.0,
    flip: bool = False,
    out: int = 64,
) -> np.ndarray:
    """Bilinear similarity-warped square crop (centre, side, rotation), float grey."""
    from skimage.transform import warp

    a = np.deg2rad(angle_deg)
    s = size / out
    cos, sin = np.cos(a) * s, np.sin(a) * s
    fx = -1.0 if flip else 1.0

    def inverse_map(coords: np.ndarray) -> np.ndarray:  # output (col, row) -> input (col, row)
        u = (coords[:, 0] - (out - 1) / 2) * fx
        v = coords[:, 1] - (out - 1) / 2
        return np.stack([cx + cos * u - sin * v, cy + sin * u + cos * v], axis=1)

    # Anti-alias a large down-scale a little, like a real resize would.
    src = image
    if s > 1.5:
        from skimage.filters import gaussian

        src = gaussian(image, sigma=(s - 1) / 2, preserve_range=True)
    return warp(
        src, inverse_map, output_shape=(out, out), order=1, mode="edge", preserve_range=True
    )


def face_crops(rng: np.random.Generator, per_face: int = 80) -> np.ndarray:
    import skimage.data as data

    crops = []
    for name, (x, y, size) in FACES.items():
        g = grey(getattr(data, name)())
        cx, cy = x + size / 2, y + size / 2
        for i in range(per_face):
            if i == 0:
                scale, dx, dy, ang, flip, gain, bias = 1.0, 0, 0, 0.0, False, 1.0, 0.0
            else:
                scale = rng.uniform(0.85, 1.5)
                dx, dy = rng.uniform(-0.12, 0.12, size=2) * size
                ang = rng.uniform(-12, 12)
                flip = bool(rng.integers(2))
                gain, bias = rng.uniform(0.6, 1.4), rng.uniform(-30, 30)
            c = crop(g, cx + dx, cy + dy, size * scale, ang, flip)
            crops.append(np.clip(c * gain + bias, 0, 255))
    for name, x, y, size in NON_FACES:
        g = grey(getattr(data, name)())
        crops.append(crop(g, x + size / 2, y + size / 2, size))
    return np.rint(np.stack(crops)).astype(np.uint8)


def normalise(x: np.ndarray) -> np.ndarray:
    """The contract's normalisation, (x - 127.5) / 127.5 == (x / 255 - 0.5) * 2, float32."""
    return ((x.astype(np.float32) - np.float32(127.5)) / np.float32(127.5)).astype(np.float32)


def letterbox(image: np.ndarray, size: int) -> np.ndarray:
    """Keep the aspect ratio, scale the long side to ``size``, centre, pad with black."""
    from skimage.transform import resize

    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    image = image[..., :3]
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = resize(image, (nh, nw), order=1, anti_aliasing=True, preserve_range=True)
    out = np.zeros((size, size, 3), np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top : top + nh, left : left + nw] = np.clip(np.rint(small), 0, 255).astype(np.uint8)
    return out


def detector_scenes() -> list[np.ndarray]:
    """Full-size RGB scenes: astronaut, camera, a 640×480 two-face collage, a face-less photo."""
    import skimage.data as data
    from skimage.transform import resize

    astro, cam = data.astronaut(), np.repeat(data.camera()[..., None], 3, axis=2)
    collage = np.full((480, 640, 3), 90, np.uint8)
    collage[40:280, 30:270] = np.rint(
        resize(astro, (240, 240), anti_aliasing=True, preserve_range=True)
    ).astype(np.uint8)
    collage[200:440, 380:620] = np.rint(
        resize(cam[:, ::-1], (240, 240), anti_aliasing=True, preserve_range=True)
    ).astype(np.uint8)
    return [astro, cam, collage, data.rocket()]


TFJS_SCRIPT = r"""
const fs = require('fs');
const tf = require('@tensorflow/tfjs');
const [graphPath, binPath, inPath, outPath, n] = process.argv.slice(2);
(async () => {
  await tf.setBackend('cpu');
  const graph = JSON.parse(fs.readFileSync(graphPath, 'utf8'));
  const bin = fs.readFileSync(binPath);
  const weightData = bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength);
  const model = await tf.loadGraphModel(tf.io.fromMemory({
    modelTopology: graph.modelTopology, weightSpecs: graph.weightsManifest[0].weights,
    weightData, format: graph.format, generatedBy: graph.generatedBy,
    convertedBy: graph.convertedBy, userDefinedMetadata: graph.userDefinedMetadata}));
  const raw = fs.readFileSync(inPath);
  const x = tf.tensor4d(new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4),
                        [Number(n), 64, 64, 1]);
  const y = model.execute(x);
  fs.writeFileSync(outPath, Buffer.from((await y.data()).buffer));
  console.log('tfjs', tf.version.tfjs, 'backend', tf.getBackend());
})();
"""


def tfjs_reference(inputs: np.ndarray, tfjs_dir: Path, tmp: Path) -> tuple[np.ndarray, str]:
    """Run @vladmandic/human's emotion model in TensorFlow.js (node, CPU backend)."""
    import os
    import subprocess

    src = human_emotion.SOURCE
    archive = fetch_archive(src, tmp / "human")
    (tmp / "emotion.json").write_bytes(read_member(archive, src.member))
    (tmp / "emotion.bin").write_bytes(read_member(archive, human_emotion.BIN_MEMBER))
    normalise(inputs).tofile(tmp / "x.f32")
    (tmp / "run.js").write_text(TFJS_SCRIPT)
    env = {**os.environ, "NODE_PATH": str(Path(tfjs_dir).resolve() / "node_modules")}
    log = (
        subprocess.run(
            [
                "node",
                str(tmp / "run.js"),
                str(tmp / "emotion.json"),
                str(tmp / "emotion.bin"),
                str(tmp / "x.f32"),
                str(tmp / "y.f32"),
                str(len(inputs)),
            ],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    return np.fromfile(tmp / "y.f32", dtype="<f4").reshape(len(inputs), 7), log


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Reference outputs from the original runtimes.")
    ap.add_argument("--out", default="tests/data/reference")
    ap.add_argument("--tfjs-dir", help="folder with node_modules/@tensorflow/tfjs (big-Xception)")
    ap.add_argument(
        "--only",
        choices=["mini", "blazeface", "big"],
        action="append",
        help="compute only these references (default: all available)",
    )
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    only = set(args.only or ["mini", "blazeface", "big"])
    if "big" in only and not args.tfjs_dir:
        print("big-Xception reference skipped: no --tfjs-dir")
        only.discard("big")

    rng = np.random.default_rng(SEED)
    with tempfile.TemporaryDirectory(prefix="classpulse-ref-") as tmp:
        tmp = Path(tmp)
        if "mini" in only:
            # --- mini-Xception, run by Keras from the original HDF5.
            import keras
            import tensorflow as tf

            src = fer_mini_xception.SOURCE
            h5 = fetch_member(src, tmp / "fer")
            model = keras.models.load_model(str(h5), compile=False)
            inputs = face_crops(rng)
            probs = model.predict(normalise(inputs)[..., None], batch_size=64, verbose=0)
            np.savez_compressed(
                out / "mini_xception_keras.npz",
                inputs=inputs,
                probs=probs.astype(np.float32),
                source_sha256=src.member_sha256,
                runtime=f"keras {keras.__version__} / tensorflow {tf.__version__}",
            )
            print(
                f"mini-Xception: {len(inputs)} crops, top-1 histogram "
                f"{np.bincount(probs.argmax(1), minlength=7).tolist()}"
            )
        if "big" in only:
            # --- big-Xception, run by TensorFlow.js on the same crops.
            inputs = np.load(out / "mini_xception_keras.npz")["inputs"]
            probs, log = tfjs_reference(inputs, Path(args.tfjs_dir), tmp)
            np.savez_compressed(
                out / "big_xception_tfjs.npz",
                probs=probs.astype(np.float32),
                source_sha256=human_emotion.SOURCE.member_sha256,
                weights_sha256=human_emotion.BIN_SHA256,
                runtime=log,
            )
            print(
                f"big-Xception ({log}): top-1 histogram "
                f"{np.bincount(probs.argmax(1), minlength=7).tolist()}"
            )
        if "blazeface" not in only:
            return
        import tensorflow as tf

        # --- BlazeFace, run by the TFLite interpreter from the original .tflite files.
        scenes = detector_scenes()
        for variant, spec in blazeface.VARIANTS.items():
            tflite = fetch_member(spec.source, tmp / variant)
            interp = tf.lite.Interpreter(model_path=str(tflite))
            interp.allocate_tensors()
            inp = interp.get_input_details()[0]
            outs = {d["name"]: d for d in interp.get_output_details()}
            reg_d = next(d for d in outs.values() if d["shape"][-1] == 16)
            cls_d = next(d for d in outs.values() if d["shape"][-1] == 1)
            boxes = np.stack([letterbox(s, spec.size) for s in scenes])
            logits, tops, top_reg = [], [], []
            for img in boxes:
                interp.set_tensor(inp["index"], normalise(img)[None])
                interp.invoke()
                reg = interp.get_tensor(reg_d["index"])[0]
                cls = interp.get_tensor(cls_d["index"])[0, :, 0]
                top = np.argsort(-cls, kind="stable")[:TOP_K].astype(np.int32)
                logits.append(cls)
                tops.append(top)
                top_reg.append(reg[top])
            logits = np.stack(logits).astype(np.float32)
            np.savez_compressed(
                out / f"blazeface_{variant}_tflite.npz",
                inputs=boxes,
                logits=logits,
                top_index=np.stack(tops),
                top_regressors=np.stack(top_reg).astype(np.float32),
                source_sha256=spec.source.member_sha256,
                runtime=f"tf.lite.Interpreter / tensorflow {tf.__version__}",
            )
            print(
                f"{variant}: max sigmoid score per scene "
                f"{np.round(1 / (1 + np.exp(-logits.max(1))), 3).tolist()}"
            )


if __name__ == "__main__":
    main()
