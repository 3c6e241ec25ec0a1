"""Inference core benchmark: classifier faces/s by batch, per-frame pipeline cost, our overhead.

    .venv/bin/python bench/bench_inference.py [--repeat 200] [--threads 1]
    .venv/bin/python bench/bench_inference.py --providers cuda,cpu --require-gpu   # on a GPU machine

Runs on the first of --providers that the installed onnxruntime offers (onnxruntime-gpu for
CUDA/TensorRT; the CPU otherwise) and prints the providers actually used; --require-gpu fails
instead of falling back to the CPU. Prints:
1. mini-Xception faces/s at batch 1, 8, 32, 128;
2. the full per-frame pipeline (JPEG decode + detect + crop + classify), one face per frame,
   at 320×240 and 640×480, in ms/frame (median);
3. the ratio of the pipeline's time to the bare InferenceSession.run calls on the same inputs,
   measured in the same run: the overhead our code adds (letterbox, decoding, NMS, crops);
4. the cost of optional pipeline variants;
5. worker-style throughput: batches of JPEG frames (the batch size the worker picks for this
   device) decoded, detected and classified, in frames/s and faces/s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from skimage import data as skdata

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classpulse.settings import REPO_ROOT  # noqa: E402
from worker.classifier import EmotionClassifier  # noqa: E402
from worker.detector import FaceDetector  # noqa: E402
from worker.pipeline import FramePipeline, decode_jpeg  # noqa: E402
from worker.runtime import OnnxModel  # noqa: E402

MODELS = REPO_ROOT / "models"


def median_ms(fn, repeat: int) -> float:
    for _ in range(max(3, repeat // 10)):
        fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def interleaved_ms(fns: dict, repeat: int) -> dict[str, float]:
    """Median ms of each function, run in turn in the same loop: a busy neighbour (this machine
    is shared) slows them alike, so their ratio stays meaningful."""
    for fn in fns.values():
        for _ in range(max(3, repeat // 10)):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[key].append((time.perf_counter() - t0) * 1000)
    return {k: statistics.median(v) for k, v in samples.items()}


def webcam_frame(width: int, height: int) -> np.ndarray:
    """A webcam-like frame: the astronaut's head and shoulders filling about half the height."""
    astro = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)[0:400, 60:460]
    side = int(height * 0.9)
    frame = np.full((height, width, 3), 110, np.uint8)
    x = (width - side) // 2
    frame[height - side :, x : x + side] = cv2.resize(astro, (side, side))
    return frame


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--providers",
        default="cuda,cpu",
        help="execution providers in order of preference, e.g. tensorrt,cuda,cpu or cpu",
    )
    ap.add_argument("--require-gpu", action="store_true", help="fail unless a GPU provider is used")
    ap.add_argument(
        "--batch", type=int, help="frames per batch in part 5 (default: the worker's choice)"
    )
    ap.add_argument(
        "--seconds", type=float, default=5.0, help="duration of each part-5 measurement"
    )
    args = ap.parse_args()
    kw = dict(
        providers=args.providers.split(","),
        intra_op_threads=args.threads,
        require_gpu=args.require_gpu,
    )
    det_model = OnnxModel(MODELS / "face_detection_full_range.onnx", **kw)
    emo_model = OnnxModel(MODELS / "emotion_mini_xception.onnx", **kw)
    detector = FaceDetector(det_model)
    classifier = EmotionClassifier([emo_model])
    pipeline = FramePipeline(detector, classifier)
    print(f"providers: {det_model.providers}; intra-op threads: {args.threads}")

    print("\n1. emotion classifier (mini-Xception), bare InferenceSession.run")
    print(f"{'batch':>6} {'ms/batch':>9} {'ms/face':>8} {'faces/s':>9}")
    rng = np.random.default_rng(0)
    for n in (1, 8, 32, 128):
        x = rng.uniform(-1, 1, (n, 64, 64, 1)).astype(np.float32)
        ms = median_ms(
            lambda x=x: emo_model.session.run(None, {"input": x}), max(20, args.repeat // 4)
        )
        print(f"{n:>6} {ms:>9.3f} {ms / n:>8.3f} {n / ms * 1000:>9.0f}")

    print("\n2-3. per-frame pipeline, one face per frame (median ms)")
    print(
        f"{'frame':>8} {'decode':>7} {'pipeline':>9} {'+decode':>8} {'bare run':>9} {'ratio':>6} {'ratio+dec':>9}"
    )
    for w, h in ((320, 240), (640, 480)):
        frame = webcam_frame(w, h)
        jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 70])[1].tobytes()
        (faces,), _ = pipeline.analyze([frame])
        assert len(faces) == 1, f"expected one face at {w}×{h}, found {len(faces)}"
        # The bare calls on the very inputs the pipeline feeds the models.
        det_input = np.empty((1, *det_model.input_shape), np.float32)
        detector.preprocess_into(frame, det_input[0])
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        crops = classifier.crops(grey, [faces[0].box])
        emo_input = ((crops.astype(np.float32) - 127.5) / 127.5)[..., None]

        def bare(det_input=det_input, emo_input=emo_input) -> None:
            det_model.session.run(None, {"input": det_input})
            emo_model.session.run(None, {"input": emo_input})

        m = interleaved_ms(
            {
                "decode": lambda jpeg=jpeg: decode_jpeg(jpeg),
                "full": lambda jpeg=jpeg: pipeline.analyze([decode_jpeg(jpeg)]),
                "only": lambda frame=frame: pipeline.analyze([frame]),
                "bare": bare,
            },
            args.repeat,
        )
        decode, full, only, bare_ms = m["decode"], m["full"], m["only"], m["bare"]
        print(
            f"{w}x{h:<4} {decode:>7.3f} {only:>9.3f} {full:>8.3f} {bare_ms:>9.3f} "
            f"{only / bare_ms:>6.2f} {full / bare_ms:>9.2f}"
        )

    print("\n4. options (640×480, one face): cost before making them default")
    frame = webcam_frame(640, 480)
    variants = {
        "default": pipeline,
        "flip-averaging": FramePipeline(
            detector, EmotionClassifier([emo_model], flip_average=True)
        ),
        "short-range detector": FramePipeline(
            FaceDetector(OnnxModel(MODELS / "face_detection_short_range.onnx", **kw)), classifier
        ),
    }
    big = MODELS / "emotion_big_xception.onnx"
    if big.exists():
        variants["ensemble with big-Xception"] = FramePipeline(
            detector, EmotionClassifier([emo_model, OnnxModel(big, **kw)])
        )
    m = interleaved_ms(
        {k: (lambda p=p: p.analyze([frame])) for k, p in variants.items()}, args.repeat
    )
    for key, ms in m.items():
        print(f"  {key:<28} {ms:7.3f} ms  ({ms / m['default']:.2f}×)")

    throughput(pipeline, det_model, args)
    return 0


def class_frame() -> np.ndarray:
    """640×480 with four faces (the astronaut's head and shoulders in a 2×2 grid)."""
    astro = cv2.resize(
        cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)[0:400, 60:460], (220, 220)
    )
    frame = np.full((480, 640, 3), 110, np.uint8)
    for y in (10, 250):
        for x in (70, 350):
            frame[y : y + 220, x : x + 220] = astro
    return frame


def throughput(pipeline: FramePipeline, det_model: OnnxModel, args: argparse.Namespace) -> None:
    from worker.service import CPU_BATCH, GPU_BATCH

    batch = args.batch or (GPU_BATCH if det_model.uses_gpu else CPU_BATCH)
    device = "GPU" if det_model.uses_gpu else "CPU"
    print(
        f"\n5. worker-style throughput on the {device} ({det_model.providers[0]}), batch {batch}, "
        "JPEG decode included"
    )
    print(f"{'frames':<26} {'frames/s':>9} {'faces/s':>9} {'ms/batch':>9}")
    for label, frame in (
        ("320×240, 1 face", webcam_frame(320, 240)),
        ("640×480, 4 faces", class_frame()),
    ):
        jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 70])[1].tobytes()
        jpegs = [jpeg] * batch
        pipeline.analyze([decode_jpeg(j) for j in jpegs])  # warm-up at this batch shape
        n_frames = n_faces = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < args.seconds:
            results, timings = pipeline.analyze([decode_jpeg(j) for j in jpegs])
            n_frames += len(results)
            n_faces += timings.faces
        dt = time.perf_counter() - t0
        print(
            f"{label:<26} {n_frames / dt:>9.0f} {n_faces / dt:>9.0f} {dt / (n_frames / batch) * 1000:>9.1f}"
        )


if __name__ == "__main__":
    sys.exit(main())
