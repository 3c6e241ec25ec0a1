"""BlazeFace (MediaPipe) face detection: letterbox, anchors, sigmoid, weighted NMS, keypoints.

Everything model-specific (input size, anchor strides, regressor scale, keypoint names) comes
from the model's metadata contract; this module only knows the SSD decoding scheme.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from worker.runtime import OnnxModel


@dataclass(frozen=True, slots=True)
class Detection:
    box: tuple[float, float, float, float]  # x, y, w, h in frame pixels
    score: float
    keypoints: np.ndarray  # (K, 2) x, y in frame pixels


def ssd_anchors(size: int, strides: list[int], per_stride: list[int], offset: float) -> np.ndarray:
    """MediaPipe SSD anchor centres (A, 2), normalised; consecutive equal strides share a grid."""
    centres: list[np.ndarray] = []
    i = 0
    while i < len(strides):
        stride, count = strides[i], 0
        while i < len(strides) and strides[i] == stride:
            count += per_stride[i]
            i += 1
        cells = -(-size // stride)  # ceil: MediaPipe's feature map size
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        grid = np.stack([(xs + offset) / cells, (ys + offset) / cells], axis=-1).reshape(-1, 1, 2)
        centres.append(np.repeat(grid, count, axis=1).reshape(-1, 2))
    return np.concatenate(centres).astype(np.float32)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, extra: np.ndarray, iou: float):
    """MediaPipe's weighted NMS: overlapping detections are averaged, weighted by score.

    ``boxes`` are (N, 4) x1, y1, x2, y2; ``extra`` (N, K) is averaged with them (keypoints).
    Returns a list of (box, score, extra) with the cluster's best score.
    """
    order = np.argsort(-scores)
    boxes, scores, extra = boxes[order], scores[order], extra[order]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    alive = np.ones(len(boxes), bool)
    out = []
    for i in range(len(boxes)):
        if not alive[i]:
            continue
        x1 = np.maximum(boxes[i, 0], boxes[:, 0])
        y1 = np.maximum(boxes[i, 1], boxes[:, 1])
        x2 = np.minimum(boxes[i, 2], boxes[:, 2])
        y2 = np.minimum(boxes[i, 3], boxes[:, 3])
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        overlap = inter / np.maximum(areas[i] + areas - inter, 1e-9)
        cluster = alive & (overlap > iou)
        cluster[i] = True
        w = scores[cluster][:, None]
        out.append(
            (
                (boxes[cluster] * w).sum(0) / w.sum(),
                float(scores[i]),
                (extra[cluster] * w).sum(0) / w.sum(),
            )
        )
        alive &= ~cluster
    return out


class FaceDetector:
    """Finds faces in BGR frames of any size; boxes come back in frame pixels."""

    def __init__(
        self,
        model: OnnxModel,
        *,
        score_threshold: float | None = None,
        iou_threshold: float = 0.3,
        min_face_size: int = 20,
        max_faces: int = 32,
    ) -> None:
        c = model.contract
        if c.kind != "face_detector" or c.input_height != c.input_width:
            raise ValueError(f"{model.path.name} is not a square-input face detector")
        spec = c.detector
        self.model = model
        self.size = c.input_height
        self.anchors = ssd_anchors(
            self.size, spec["strides"], spec["anchors_per_stride"], spec.get("anchor_offset", 0.5)
        )
        self.scale = float(spec.get("regressor_scale", self.size))
        self.num_keypoints = int(spec.get("num_keypoints", 6))
        self.keypoint_names: list[str] = spec.get("keypoints", [])
        self.score_clip = float(spec.get("score_clip", 100.0))
        outputs = spec.get("outputs", {})
        self._reg_idx = model.output_names.index(outputs.get("regressors", "regressors"))
        self._score_idx = model.output_names.index(outputs.get("scores", "scores"))
        if score_threshold is None:
            score_threshold = float(spec.get("min_score_thresh", 0.5))
        # Threshold on logits, not on probabilities: skips the sigmoid for thousands of anchors.
        self.score_threshold = score_threshold
        self._logit_threshold = float(np.log(score_threshold / (1 - score_threshold)))
        self.iou_threshold = iou_threshold
        self.min_face_size = min_face_size
        self.max_faces = max_faces
        self._rgb = c.colour == "rgb"
        self._nchw = c.layout == "NCHW"
        self._mul = np.float32(1.0 / c.std)
        self._add = np.float32(-c.mean / c.std)

    def preprocess_into(self, frame_bgr: np.ndarray, out: np.ndarray) -> tuple[float, int, int]:
        """Letterbox into ``out`` (one sample in the model's layout) as MediaPipe does: keep the
        aspect ratio, pad evenly with black. Returns (scale, pad_x, pad_y) to map boxes back."""
        h, w = frame_bgr.shape[:2]
        scale = self.size / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        resized = cv2.resize(frame_bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
        pad_x, pad_y = (self.size - nw) // 2, (self.size - nh) // 2
        # Black borders are -mean/std once normalised, as in MediaPipe's letterbox.
        out.fill(self._add)
        if self._nchw:
            # Channel planes written one by one: cheaper than a strided transpose (measured).
            planes = cv2.split(resized)
            if self._rgb:
                planes = planes[::-1]
            for channel, plane in zip(out, planes, strict=True):
                region = channel[pad_y : pad_y + nh, pad_x : pad_x + nw]
                np.multiply(plane, self._mul, out=region, dtype=np.float32)
                region += self._add
        else:
            region = out[pad_y : pad_y + nh, pad_x : pad_x + nw]
            np.multiply(
                resized[:, :, ::-1] if self._rgb else resized,
                self._mul,
                out=region,
                dtype=np.float32,
            )
            region += self._add
        return scale, pad_x, pad_y

    def detect(self, frame_bgr: np.ndarray) -> list[Detection]:
        return self.detect_batch([frame_bgr])[0]

    def detect_batch(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        if not frames:
            return []
        batch = np.empty((len(frames), *self.model.input_shape), np.float32)
        geometry = [self.preprocess_into(f, batch[i]) for i, f in enumerate(frames)]
        outputs = self.model.predict(batch)
        regs = outputs[self._reg_idx].reshape(len(frames), len(self.anchors), -1)
        logits = outputs[self._score_idx].reshape(len(frames), len(self.anchors))
        return [
            self._decode(regs[i], logits[i], frames[i].shape[:2], *geometry[i])
            for i in range(len(frames))
        ]

    def _decode(self, reg, logit, hw, scale, pad_x, pad_y) -> list[Detection]:
        keep = np.flatnonzero(logit > self._logit_threshold)
        if keep.size == 0:
            return []
        reg, logit, anchors = reg[keep], logit[keep], self.anchors[keep]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logit, -self.score_clip, self.score_clip)))
        # Regressors are in input pixels relative to the anchor centre (anchor size fixed at 1).
        cx = reg[:, 0] / self.scale + anchors[:, 0]
        cy = reg[:, 1] / self.scale + anchors[:, 1]
        bw, bh = reg[:, 2] / self.scale, reg[:, 3] / self.scale
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        k = self.num_keypoints
        kps = reg[:, 4 : 4 + 2 * k].reshape(-1, k, 2) / self.scale + anchors[:, None, :]
        merged = weighted_nms(boxes, scores, kps.reshape(-1, 2 * k), self.iou_threshold)
        # Normalised letterbox coordinates -> frame pixels.
        to_px = np.array([self.size / scale, self.size / scale], np.float32)
        offset = np.array([pad_x / scale, pad_y / scale], np.float32)
        h, w = hw
        out: list[Detection] = []
        for box, score, kp in merged[: self.max_faces]:
            x1, y1 = box[:2] * to_px - offset
            x2, y2 = box[2:] * to_px - offset
            x1, y1, x2, y2 = max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2)
            if x2 - x1 < self.min_face_size or y2 - y1 < self.min_face_size:
                continue
            points = kp.reshape(k, 2) * to_px - offset
            out.append(
                Detection((float(x1), float(y1), float(x2 - x1), float(y2 - y1)), score, points)
            )
        return out
