"""Faces and emotions in photos and recorded videos, offline (`classpulse analyze FILE...`; its
arguments are defined in classpulse/cli/analyze.py)."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from classpulse.settings import get_settings
from worker.pipeline import FaceResult, FramePipeline

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}
VIDEO_CHUNK = 8  # frames classified together: all their faces go to the model in one batch


class UnreadableFile(Exception):
    pass


def load_image(path: Path) -> np.ndarray:
    """BGR uint8 from any image OpenCV reads; alpha composited on white, grey expanded."""
    data = np.fromfile(str(path), np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise UnreadableFile("not an image OpenCV can decode")
    if image.dtype != np.uint8:  # 16-bit PNG/TIFF
        image = cv2.convertScaleAbs(image, alpha=255.0 / max(1, int(image.max())))
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        return (image[:, :, :3] * alpha + 255.0 * (1 - alpha)).astype(np.uint8)
    return image


def video_frames(path: Path, every: int) -> Iterator[tuple[int, float, np.ndarray]]:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise UnreadableFile("not an image or a video OpenCV can read")
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    index, yielded = 0, 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if index % every == 0:
                yielded += 1
                yield index, (index / fps if fps > 0 else 0.0), frame
            index += 1
    finally:
        cap.release()
    if yielded == 0:
        raise UnreadableFile("no frame could be read")


def face_json(face: FaceResult, labels: tuple[str, ...]) -> dict:
    out: dict = {"box": list(face.box), "score": round(face.score, 4)}
    if face.probs is not None:
        out["emotion"] = labels[int(np.argmax(face.probs))]
        out["probs"] = {
            label: round(float(p), 7) for label, p in zip(labels, face.probs, strict=True)
        }
    return out


def annotate(frame: np.ndarray, faces: list[FaceResult], labels: tuple[str, ...]) -> np.ndarray:
    out = frame.copy()
    thickness = max(1, round(max(frame.shape[:2]) / 400))
    for face in faces:
        x, y, w, h = face.box
        cv2.rectangle(out, (x, y), (x + w, y + h), (0, 200, 0), thickness)
        text = f"face {face.score:.2f}"
        if face.probs is not None:
            k = int(np.argmax(face.probs))
            text = f"{labels[k]} {face.probs[k]:.0%}"
        scale = 0.4 * thickness + 0.1
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        ty = y - 4 if y - th - 6 > 0 else y + h + th + 4
        cv2.rectangle(out, (x, ty - th - 4), (x + tw + 4, ty + 4), (0, 200, 0), -1)
        cv2.putText(out, text, (x + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness)
    return out


class Analyzer:
    def __init__(self, pipeline: FramePipeline, args: argparse.Namespace) -> None:
        self.pipeline = pipeline
        self.args = args
        self.labels = pipeline.labels

    def emit(self, source: Path, frame: int, t: float, faces: list[FaceResult]) -> None:
        if self.args.json:
            record = {
                "source": str(source),
                "frame": frame,
                "t": round(t, 3),
                "faces": [face_json(f, self.labels) for f in faces],
            }
            print(json.dumps(record), flush=False)
            return
        found = ", ".join(
            f"{d['emotion']} ({d['probs'][d['emotion']]:.2f})" if "emotion" in d else "face"
            for d in (face_json(f, self.labels) for f in faces)
        )
        where = f"{source}" if frame == 0 and t == 0 else f"{source} @ {t:.2f}s"
        print(f"{where}: {len(faces)} face(s){': ' + found if found else ''}")

    def image(self, path: Path) -> None:
        frame = load_image(path)
        (faces,), _ = self.pipeline.analyze([frame])
        self.emit(path, 0, 0.0, faces)
        if self.args.annotate:
            out = (
                self.args.annotate
                / f"{path.stem}.annotated{path.suffix if path.suffix.lower() in ('.jpg', '.jpeg', '.png') else '.png'}"
            )
            cv2.imwrite(str(out), annotate(frame, faces, self.labels))

    def video(self, path: Path) -> None:
        counts: Counter[str] = Counter()
        frames_seen = frames_without_face = 0
        writer = None
        chunk: list[tuple[int, float, np.ndarray]] = []

        def flush() -> None:
            nonlocal frames_seen, frames_without_face, writer
            results, _ = self.pipeline.analyze([f for _, _, f in chunk])
            for (index, t, frame), faces in zip(chunk, results, strict=True):
                self.emit(path, index, t, faces)
                frames_seen += 1
                frames_without_face += not faces
                for face in faces:
                    if face.probs is not None:
                        counts[self.labels[int(np.argmax(face.probs))]] += 1
                if self.args.annotate:
                    if writer is None:
                        h, w = frame.shape[:2]
                        out = self.args.annotate / f"{path.stem}.annotated.mp4"
                        writer = cv2.VideoWriter(
                            str(out), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (w, h)
                        )
                    writer.write(annotate(frame, faces, self.labels))
            chunk.clear()

        try:
            for item in video_frames(path, self.args.every):
                chunk.append(item)
                if len(chunk) == VIDEO_CHUNK:
                    flush()
            if chunk:
                flush()
        finally:
            if writer is not None:
                writer.release()
        total = sum(counts.values())
        summary = {
            "source": str(path),
            "frames_analysed": frames_seen,
            "frames_without_face": frames_without_face,
            "share_by_emotion": {k: round(counts[k] / total, 4) for k in self.labels}
            if total
            else {},
        }
        # The summary goes to stderr in --json mode so stdout stays one object per frame.
        stream = sys.stderr if self.args.json else sys.stdout
        print(f"summary {json.dumps(summary)}", file=stream)


def run(args: argparse.Namespace) -> int:
    if args.every < 1:
        print("error: --every must be at least 1", file=sys.stderr)
        return 2
    overrides = {}
    if args.emotion_model:
        overrides["emotion_model"] = args.emotion_model
    if args.detector_model:
        overrides["detector_model"] = args.detector_model
    settings = get_settings(**overrides)
    pipeline = FramePipeline.from_settings(settings)
    if args.annotate:
        args.annotate.mkdir(parents=True, exist_ok=True)
    analyzer = Analyzer(pipeline, args)
    failed = 0
    for path in args.files:
        try:
            if not path.is_file():
                raise UnreadableFile("no such file")
            if path.suffix.lower() in IMAGE_SUFFIXES:
                analyzer.image(path)
            else:
                analyzer.video(path)
        except UnreadableFile as exc:
            failed += 1
            print(f"error: {path}: {exc}", file=sys.stderr)
        sys.stdout.flush()
    return 1 if failed else 0
