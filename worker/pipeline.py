"""Frame → faces → emotions: the inference core shared by the live worker and `analyze`.

A batch may mix decoded frames (detected here) with ``DetectedFrame``s, whose faces and grey
crops the student's page found and cut itself (edge capture): every crop of the batch, cut here
or sent, goes to the classifier in one call."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from classpulse.jpeg_header import JpegHeaderError, frame_size
from classpulse.settings import Settings
from worker.classifier import EmotionClassifier
from worker.detector import Detection, FaceDetector
from worker.runtime import OnnxModel


class BadFrame(ValueError):
    """A frame that cannot be analysed; ``reason`` is a short counter label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def decode_jpeg(data: bytes) -> np.ndarray:
    """Decode a JPEG frame to BGR after checking its declared size; BadFrame on any problem,
    whatever the decoder raises."""
    try:
        w, h = frame_size(data)
    except JpegHeaderError as exc:
        raise BadFrame(exc.reason, str(exc)) from exc
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:  # the header check should make this unreachable; never fatal
        raise BadFrame("corrupt", f"JPEG could not be decoded: {exc}") from exc
    if image is None:
        raise BadFrame("corrupt", "JPEG could not be decoded")
    if image.shape[:2] != (h, w):  # the decoder read another header than ours: refuse it
        raise BadFrame("corrupt", f"JPEG decoded to {image.shape[1]}×{image.shape[0]}, not {w}×{h}")
    return image


@dataclass(slots=True)
class FaceResult:
    box: tuple[int, int, int, int]  # x, y, w, h in frame pixels
    score: float
    keypoints: np.ndarray
    probs: np.ndarray | None = None  # in FramePipeline.labels order; None when emotion is off
    # Head yaw and pitch, degrees, as an edge-capture page sent them (faces message version 2);
    # None otherwise: the worker computes them from the keypoints when attention is observed.
    yaw: float | None = None
    pitch: float | None = None


@dataclass(slots=True)
class DetectedFrame:
    """A frame the student's page ran the face detector on (edge capture): its size, its faces
    and their grey crops at the classifier's input size, in the faces' order (None: the page
    sent boxes only, or the policy wants no emotions)."""

    width: int
    height: int
    faces: list[FaceResult]
    crops: np.ndarray | None = None  # (n, side, side) uint8
    filtered: bool = False  # crops still "Sub"-filtered (packed), until worker.batch.unfilter


@dataclass
class Timings:
    detect_ms: float = 0.0
    classify_ms: float = 0.0
    faces: int = 0


class FramePipeline:
    """Detects faces in BGR frames and classifies all faces of a batch of frames in one call."""

    def __init__(self, detector: FaceDetector, classifier: EmotionClassifier | None) -> None:
        self.detector = detector
        self.classifier = classifier
        # Batching the detector across frames did not pay on the CPU (not recorded); it does on a GPU.
        self.batch_detector = detector.model.uses_gpu

    @classmethod
    def from_settings(cls, settings: Settings, *, emotion: bool = True) -> FramePipeline:
        def model(path: Path) -> OnnxModel:
            return OnnxModel(
                path,
                providers=settings.providers,
                intra_op_threads=settings.intra_op_threads,
                require_gpu=settings.require_gpu,
            )

        detector = FaceDetector(
            model(settings.detector_model_path),
            score_threshold=settings.detector_score_threshold,
            iou_threshold=settings.detector_iou_threshold,
            min_face_size=settings.min_face_size,
            max_faces=settings.max_faces,
        )
        classifier = None
        if emotion:
            paths = [settings.emotion_model_path, *settings.extra_emotion_models]
            classifier = EmotionClassifier(
                [model(p) for p in paths],
                crop_scale=settings.crop_scale,
                flip_average=settings.flip_average,
            )
        return cls(detector, classifier)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.classifier.labels if self.classifier else ()

    @property
    def versions(self) -> dict[str, str]:
        c = self.detector.model.contract
        out = {"detector": f"{c.name}@{c.version}"}
        if self.classifier:
            out["emotion"] = self.classifier.version
        return out

    def analyze(
        self, frames: Sequence[np.ndarray | DetectedFrame], emotion: list[bool] | None = None
    ) -> tuple[list[list[FaceResult]], Timings]:
        """Faces per frame; ``emotion[i]`` False skips classification for frame i. Decoded
        frames (BGR arrays) are detected here; a ``DetectedFrame`` brings its faces (and crops)."""
        timings = Timings()
        t0 = time.perf_counter()
        detections = self._detect(frames)
        t1 = time.perf_counter()
        timings.detect_ms = (t1 - t0) * 1000
        results = [
            f.faces if isinstance(f, DetectedFrame) else [_face(d) for d in dets]
            for f, dets in zip(frames, detections, strict=True)
        ]
        timings.faces = sum(len(r) for r in results)
        if self.classifier is not None and timings.faces:
            self._classify(frames, detections, results, emotion)
            timings.classify_ms = (time.perf_counter() - t1) * 1000
        return results, timings

    def _detect(self, frames: Sequence[np.ndarray | DetectedFrame]) -> list[list[Detection]]:
        """Detections per frame; none for the frames whose page detected the faces itself."""
        out: list[list[Detection]] = [[] for _ in frames]
        todo = [i for i, f in enumerate(frames) if not isinstance(f, DetectedFrame)]
        images = [f for f in frames if not isinstance(f, DetectedFrame)]
        if not images:
            return out
        if self.batch_detector:
            found = self.detector.detect_batch(images)
        else:
            found = [self.detector.detect(f) for f in images]
        for i, dets in zip(todo, found, strict=True):
            out[i] = dets
        return out

    def _classify(
        self,
        frames: Sequence[np.ndarray | DetectedFrame],
        detections: list[list[Detection]],
        results: list[list[FaceResult]],
        emotion: list[bool] | None,
    ) -> None:
        """Every face of the batch in one classifier call: crops cut from the decoded frames
        and the crops the pages sent, together."""
        assert self.classifier is not None
        crops: list[np.ndarray] = []
        owners: list[tuple[int, int]] = []
        for i, frame in enumerate(frames):
            if not results[i] or (emotion is not None and not emotion[i]):
                continue
            if isinstance(frame, DetectedFrame):
                if frame.crops is None:
                    continue
                want = (len(frame.faces), self.classifier.size[1], self.classifier.size[0])
                if frame.crops.shape != want:
                    raise ValueError(f"crops of shape {frame.crops.shape}; expected {want}")
                crops.append(frame.crops)
            else:
                crops.append(self.classifier.crops(frame, [d.box for d in detections[i]]))
            owners.extend((i, j) for j in range(len(results[i])))
        if crops:
            probs = self.classifier.classify_crops(np.concatenate(crops))
            for (i, j), p in zip(owners, probs, strict=True):
                results[i][j].probs = p


def _face(d: Detection) -> FaceResult:
    x, y, w, h = d.box
    return FaceResult((round(x), round(y), round(w), round(h)), d.score, d.keypoints)
