"""FER2013-format data: the Kaggle CSV or image folders, validated, resized to the model input.

Both formats end up as the same in-memory arrays (uint8 images N×H×W, int64 labels in FER2013
order): 35,887 48×48 images are 83 MB, so no lazy loading or DataLoader workers are needed.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# FER2013's `emotion` column 0..6, and the sub-folder names of the image-folder format.
LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
SPLITS = ("Training", "PublicTest", "PrivateTest")
# Image folders use the usual train/val/test names; the CSV's Usage values map onto them.
FOLDERS = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
CSV_COLUMNS = ("emotion", "pixels")
FER_SIDE = 48
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".tif", ".tiff", ".webp"})


class DataError(ValueError):
    """The dataset is malformed; the message names the file, row or folder at fault."""


@dataclass
class Split:
    images: np.ndarray  # uint8 (N, H, W) grey
    labels: np.ndarray  # int64 (N,) indices into LABELS
    source: str  # for messages and reports

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(LABELS))


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Resize grey images to size×size (area when shrinking, bilinear when growing, as fer)."""
    if images.shape[1:] == (size, size):
        return images
    out = np.empty((len(images), size, size), np.uint8)
    for i, img in enumerate(images):
        interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_LINEAR
        out[i] = cv2.resize(img, (size, size), interpolation=interp)
    return out


def _read_csv(path: Path) -> dict[str, tuple[list[np.ndarray], list[int]]]:
    # The Kaggle file's 2304-value rows exceed csv's default 128 KiB field limit only when
    # padded oddly, but a generous limit costs nothing.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    splits: dict[str, tuple[list[np.ndarray], list[int]]] = {s: ([], []) for s in SPLITS}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in CSV_COLUMNS if c not in columns]
        if missing:
            raise DataError(
                f"{path}: missing column(s) {', '.join(missing)}; found {columns or 'no header'}"
                f" (expected emotion, pixels and optionally Usage)"
            )
        reader.fieldnames = columns
        n_pixels = FER_SIDE * FER_SIDE
        for row in reader:
            where = f"{path} line {reader.line_num}"
            usage = (row.get("Usage") or "Training").strip()
            if usage not in splits:
                raise DataError(f"{where}: Usage {usage!r} is not one of {', '.join(SPLITS)}")
            try:
                label = int(row["emotion"])
                pixels = np.array((row["pixels"] or "").split(), dtype=np.int64)
            except ValueError as exc:
                raise DataError(f"{where}: not a number ({exc})") from None
            if not 0 <= label < len(LABELS):
                raise DataError(f"{where}: emotion {label} is not in 0..{len(LABELS) - 1}")
            if pixels.size != n_pixels:
                raise DataError(f"{where}: {pixels.size} pixel values, expected {n_pixels}")
            if pixels.min() < 0 or pixels.max() > 255:
                raise DataError(f"{where}: pixel values must be in 0..255")
            splits[usage][0].append(pixels.astype(np.uint8).reshape(FER_SIDE, FER_SIDE))
            splits[usage][1].append(label)
    return splits


def _read_folder(folder: Path, size: int) -> Split:
    images, labels = [], []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if sub.name not in LABELS:
            raise DataError(f"{sub}: unknown label folder {sub.name!r}; use {', '.join(LABELS)}")
        for file in sorted(sub.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            img = cv2.imread(str(file), cv2.IMREAD_GRAYSCALE)
            if img is None:
                raise DataError(f"{file}: not a readable image")
            images.append(resize(img[None], size)[0])
            labels.append(LABELS.index(sub.name))
    if not images:
        raise DataError(
            f"{folder}: no images (expected {folder}/<label>/*.png for labels {', '.join(LABELS)})"
        )
    return Split(np.stack(images), np.array(labels, np.int64), str(folder))


def load_split(path: str | Path, split: str, size: int) -> Split:
    """Load one split (Training/PublicTest/PrivateTest or a folder name) resized to size×size."""
    path = Path(path)
    split = {v: k for k, v in FOLDERS.items()}.get(split, split)
    if split not in SPLITS:
        names = ", ".join(SPLITS + tuple(FOLDERS.values()))
        raise DataError(f"unknown split {split!r}; use one of {names}")
    if path.is_file():
        images, labels = _read_csv(path)[split]
        if not labels:
            raise DataError(f"{path}: split {split} has no rows (Usage column)")
        return Split(resize(np.stack(images), size), np.array(labels, np.int64), f"{path}:{split}")
    if path.is_dir():
        folder = path / FOLDERS[split]
        if not folder.is_dir():
            raise DataError(f"{path}: no {FOLDERS[split]}/ folder for split {split}")
        return _read_folder(folder, size)
    raise DataError(f"{path}: no such file or folder")


def load_train_val(path: str | Path, size: int, val_fraction: float, seed: int):
    """Training and validation splits: PublicTest (or val/) when present, else held-out train."""
    path = Path(path)
    if path.is_file():  # parse the CSV once, not once per split
        rows = _read_csv(path)
        parts = {}
        for split in ("Training", "PublicTest"):
            images, labels = rows[split]
            if labels:
                parts[split] = Split(
                    resize(np.stack(images), size), np.array(labels, np.int64), f"{path}:{split}"
                )
        if "Training" not in parts:
            raise DataError(f"{path}: split Training has no rows (Usage column)")
        train, val = parts["Training"], parts.get("PublicTest")
    else:
        train = load_split(path, "Training", size)
        has_val = (path / FOLDERS["PublicTest"]).is_dir()
        val = load_split(path, "PublicTest", size) if has_val else None
    if val is not None:
        return train, val
    # Hold out a fixed, seeded fraction so that a resumed run validates on the same images.
    order = np.random.default_rng(seed).permutation(len(train))
    n_val = max(1, int(round(len(train) * val_fraction)))
    if n_val >= len(train):
        raise DataError(f"{train.source}: {len(train)} images are too few to hold out validation")
    va, tr = order[:n_val], order[n_val:]
    return (
        Split(train.images[tr], train.labels[tr], train.source),
        Split(train.images[va], train.labels[va], train.source + " (held out)"),
    )
