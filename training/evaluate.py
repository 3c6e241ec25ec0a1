"""Evaluate a checkpoint or any contract-carrying ONNX model on labelled faces.

Data: a FER2013-format split (the CSV, or train/val/test folders of crops), or a folder of face
photos or video frames labelled by folder name (``happy/*.jpg``: the ImageFolder layout) run
through the service's own path — worker/pipeline.py's FramePipeline, detector → crop →
classifier — or, with ``crops_only``, taken as already-cropped faces. ONNX models run through
worker/classifier.py, the worker's classifier, so a model's temperature (its calibration) is
applied exactly as in the service; the report gives accuracy, per-class recall, the confusion
matrix, the expected calibration error (15 bins) before and after the temperature, the
reliability diagram, and the images in which no face was found. With several models it also
measures the ensemble (the average of their calibrated probabilities) against each alone, with
the classifier's cost per face measured in the same run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from training.calibrate import ECE_BINS, ece, reliability, write_reliability
from training.data import IMAGE_SUFFIXES, LABELS, DataError, load_split, resize

Predict = Callable[[np.ndarray], np.ndarray]  # uint8 N×H×W → probabilities N×C


def torch_predictor(path: Path) -> tuple[Predict, tuple[str, ...], int, list | None]:
    import torch

    from training.export import load_checkpoint

    model, state = load_checkpoint(path)
    inp = state["input"]

    @torch.no_grad()
    def predict(images: np.ndarray) -> np.ndarray:
        x = (torch.from_numpy(images).float() - inp["mean"]) / inp["std"]
        return torch.softmax(model(x.unsqueeze(1)), dim=1).numpy()

    return predict, tuple(state["labels"]), inp["height"], state.get("history")


def metrics(y: np.ndarray, pred: np.ndarray, labels: tuple[str, ...]) -> dict:
    k = len(labels)
    cm = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)  # rows: true, cols: predicted
    tp, support, predicted = np.diag(cm), cm.sum(1), cm.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(
        2 * precision * recall, precision + recall, out=np.zeros(k), where=precision + recall > 0
    )
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(labels)
    }
    present = support > 0
    return {
        "accuracy": float(tp.sum() / max(len(y), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }


def report_text(m: dict) -> str:
    """A classification report in sklearn's familiar layout (per-class accuracy = recall)."""
    lines = [f"{'':>10} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>9}"]
    for name, r in m["per_class"].items():
        lines.append(
            f"{name:>10} {r['precision']:9.4f} {r['recall']:9.4f} {r['f1']:9.4f} {r['support']:9d}"
        )
    total = sum(r["support"] for r in m["per_class"].values())
    lines += [
        "",
        f"{'accuracy':>10} {'':9} {'':9} {m['accuracy']:9.4f} {total:9d}",
        f"{'macro f1':>10} {'':9} {'':9} {m['macro_f1']:9.4f} {total:9d}",
    ]
    return "\n".join(lines) + "\n"


def plot(m: dict, labels: tuple[str, ...], history: list | None, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    cm = np.array(m["confusion_matrix"], dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set(
        xticks=range(len(labels)),
        yticks=range(len(labels)),
        xticklabels=labels,
        yticklabels=labels,
        xlabel="predicted",
        ylabel="true",
        title=f"accuracy {m['accuracy']:.3f}",
    )
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(
            j,
            i,
            int(v),
            ha="center",
            va="center",
            color="white" if norm[i, j] > 0.5 else "black",
            fontsize=8,
        )
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(out / "confusion_matrix.png", dpi=120)
    written = ["confusion_matrix.png"]
    if history:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        epochs = [h["epoch"] + 1 for h in history]
        for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
            ax.plot(epochs, [h[f"train_{key}"] for h in history], label="train")
            ax.plot(epochs, [h[f"val_{key}"] for h in history], label="validation")
            ax.set(xlabel="epoch", ylabel=key)
            ax.legend()
        fig.tight_layout()
        fig.savefig(out / "training_curves.png", dpi=120)
        written.append("training_curves.png")
    plt.close("all")
    return written


# --- labelled faces through the service's classifier ------------------------------------------


def is_face_folder(path: Path) -> bool:
    """An ImageFolder of face photos: label-named sub-folders directly under ``path``."""
    return path.is_dir() and any((path / label).is_dir() for label in LABELS)


@dataclass
class Labelled:
    """Per-model probabilities (in ``classifier.labels`` order) of labelled faces."""

    classifier: object  # worker.classifier.EmotionClassifier
    y: np.ndarray  # true labels as indices into classifier.labels
    members: list[np.ndarray]  # one (N, labels) array per model
    source: str
    kind: str  # "fer2013" | "faces" | "crops"
    images: int  # images read (faces found or not)
    no_face: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # one per row of y (faces/crops only)
    crops: np.ndarray | None = None
    detect_ms: float = 0.0  # detection time per image (faces only)


def _classifier(models: Sequence[Path], calibrated: bool):
    from worker.classifier import EmotionClassifier
    from worker.runtime import OnnxModel

    loaded = [OnnxModel(m, providers=("cpu",)) for m in models]
    return EmotionClassifier(loaded, calibrated=calibrated)


def _face_images(folder: Path) -> list[tuple[Path, str]]:
    items = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if sub.name not in LABELS:
            raise DataError(f"{sub}: unknown label folder {sub.name!r}; use {', '.join(LABELS)}")
        items += [
            (f, sub.name)
            for f in sorted(sub.rglob("*"))
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
        ]
    if not items:
        raise DataError(f"{folder}: no images (expected {folder}/<label>/*.jpg)")
    return items


def labelled_probs(
    data: str | Path,
    models: Sequence[str | Path],
    split: str = "PrivateTest",
    *,
    calibrated: bool = True,
    crops_only: bool = False,
    detector: str | Path | None = None,
    batch: int = 256,
) -> Labelled:
    """Run every model on a labelled set, as the worker runs them (calibrated or not)."""
    data, paths = Path(data), [Path(m) for m in models]
    for m in paths:
        if not m.is_file():
            raise FileNotFoundError(f"{m}: no such model file")
    clf = _classifier(paths, calibrated)
    if sorted(clf.labels) != sorted(LABELS):
        raise ValueError(f"{paths[0]}: labels {list(clf.labels)} are not the FER2013 labels")
    side = clf.size[1]
    to_model = [clf.labels.index(name) for name in LABELS]  # FER2013 index → model index
    if not is_face_folder(data):
        ds = load_split(data, split, side)
        crops, y, files = ds.images, np.array([to_model[i] for i in ds.labels]), []
        got = Labelled(clf, y, [], ds.source, "fer2013", len(y))
    else:
        crops_l, y_l, files, no_face = [], [], [], []
        pipeline = None
        if not crops_only:
            pipeline = _pipeline(clf, detector)
        detect_s = 0.0
        items = _face_images(data)
        for file, label in items:
            img = cv2.imread(str(file), cv2.IMREAD_COLOR)
            if img is None:
                raise DataError(f"{file}: not a readable image")
            rel = str(file.relative_to(data))
            if pipeline is None:
                grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
                crop = resize(grey[None], side)[0]
            else:
                t0 = time.perf_counter()
                dets = pipeline.detector.detect(img)
                detect_s += time.perf_counter() - t0
                if not dets:
                    no_face.append(rel)
                    continue
                main = max(dets, key=lambda d: d.box[2] * d.box[3])  # as the aggregator picks
                crop = clf.crops(img, [main.box])[0]
            crops_l.append(crop)
            y_l.append(clf.labels.index(label))
            files.append(rel)
        crops = np.stack(crops_l) if crops_l else np.zeros((0, side, side), np.uint8)
        y = np.array(y_l, np.int64)
        kind = "crops" if crops_only else "faces"
        got = Labelled(clf, y, [], str(data), kind, len(items), no_face, files)
        got.detect_ms = detect_s * 1000 / max(len(items), 1)
    parts = [clf.member_probs(crops[i : i + batch]) for i in range(0, len(crops), batch)]
    got.members = [
        np.concatenate([p[k] for p in parts]) if parts else np.zeros((0, len(clf.labels)))
        for k in range(len(paths))
    ]
    got.crops = crops
    return got


def _pipeline(clf, detector: str | Path | None):
    """The worker's FramePipeline with the service's default detector settings."""
    from classpulse.settings import Settings
    from worker.detector import FaceDetector
    from worker.pipeline import FramePipeline
    from worker.runtime import OnnxModel

    defaults = Settings.model_fields
    path = (
        Path(detector)
        if detector
        else Path(__file__).resolve().parents[1] / "models" / ("face_detection_full_range.onnx")
    )
    det = FaceDetector(
        OnnxModel(path, providers=("cpu",)),
        score_threshold=defaults["detector_score_threshold"].default,
        iou_threshold=defaults["detector_iou_threshold"].default,
        min_face_size=defaults["min_face_size"].default,
        max_faces=defaults["max_faces"].default,
    )
    clf.crop_scale = defaults["crop_scale"].default
    return FramePipeline(det, clf)


def cost_per_face_ms(clf, crops: np.ndarray, repeats: int = 3) -> float:
    """The classifier's time per face on these crops, best of ``repeats`` (the box is shared)."""
    if not len(crops):
        return 0.0
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(0, len(crops), 32):  # the worker's CPU batch
            clf.classify_crops(crops[i : i + 32])
        best = min(best, time.perf_counter() - t0)
    return best * 1000 / len(crops)


def scores(probs: np.ndarray, y: np.ndarray) -> dict:
    return {
        "accuracy": float((probs.argmax(1) == y).mean()) if len(y) else 0.0,
        "ece": ece(probs, y) if len(y) else 0.0,
    }


def compare_ensemble(got: Labelled, models: Sequence[Path], out: Path) -> list[dict]:
    """Each model alone and the average of their calibrated probabilities, on the same faces:
    accuracy, ECE and classifier cost per face (measured together, one after the other)."""
    rows = []
    singles = [_classifier([m], True) for m in models]
    crops = got.crops if got.crops is not None else np.zeros((0, 64, 64), np.uint8)
    for m, clf, probs in zip(models, singles, got.members, strict=True):
        cal = clf.models[0].contract.calibration
        rows.append(
            {
                "model": m.name,
                "calibrated": cal is not None,
                "temperature": cal.temperature if cal else None,
                **scores(probs, got.y),
                "ms_per_face": cost_per_face_ms(clf, crops),
            }
        )
    mean = sum(got.members[1:], got.members[0]) / len(got.members)
    rows.append(
        {
            "model": " + ".join(m.name for m in models) + " (mean)",
            "calibrated": all(r["calibrated"] for r in rows),
            "temperature": None,
            **scores(mean, got.y),
            "ms_per_face": cost_per_face_ms(got.classifier, crops),
        }
    )
    lines = [
        f"{got.kind}: {got.source} ({len(got.y)} faces)",
        f"{'model':<58} {'accuracy':>8} {'ECE':>7} {'ms/face':>8} calibrated",
    ]

    def said(r: dict) -> str:
        if r["temperature"]:
            return f"yes (T={r['temperature']:.3f})"
        return "members are" if r["calibrated"] else "no"

    lines += [
        f"{r['model']:<58} {r['accuracy']:8.3f} {r['ece']:7.3f} {r['ms_per_face']:8.3f} {said(r)}"
        for r in rows
    ]
    (out / "ensemble.txt").write_text("\n".join(lines) + "\n")
    (out / "ensemble.json").write_text(
        json.dumps({"source": got.source, "n": len(got.y), "rows": rows}, indent=1)
    )
    return rows


def evaluate(
    data: str | Path,
    model: str | Path,
    split: str = "PrivateTest",
    out: str | Path | None = None,
    batch: int = 256,
    *,
    extra_models: Sequence[str | Path] = (),
    crops_only: bool = False,
    detector: str | Path | None = None,
) -> dict:
    """Accuracy, a classification report, calibration (ECE, reliability diagram) and, for
    face folders, the images without a face; files under out (default: next to the model)."""
    model = Path(model)
    if not model.is_file():
        raise FileNotFoundError(f"{model}: no such model file")
    data = Path(data)
    if model.suffix != ".onnx":
        if extra_models or is_face_folder(data):
            raise ValueError("face folders and ensembles need .onnx models (export-onnx first)")
        return _evaluate_checkpoint(data, model, split, out, batch)
    models = [model, *map(Path, extra_models)]
    got = labelled_probs(
        data, models, split, calibrated=True, crops_only=crops_only, detector=detector, batch=batch
    )
    clf = got.classifier
    labels = clf.labels
    # Raw outputs (T = 1) of the same faces, for "before".
    raw = _classifier(models, calibrated=False).member_probs(got.crops)
    calibrated_probs = sum(got.members[1:], got.members[0]) / len(models)
    raw_probs = sum(raw[1:], raw[0]) / len(models)
    y = got.y
    if not len(y):
        raise DataError(f"{data}: no face found in any image")
    m = metrics(y, calibrated_probs.argmax(1), labels)
    stem = model.stem if not extra_models else "ensemble"
    where = split if got.kind == "fer2013" else data.name
    out = Path(out) if out else model.parent / f"eval-{stem}-{where}"
    out.mkdir(parents=True, exist_ok=True)
    files = _write_common(out, m, labels, None)
    cals = [mm.contract.calibration for mm in clf.models]
    any_cal = any(c is not None for c in cals)
    tables = {"as shipped (T = 1)": reliability(raw_probs, y)}
    eces = {"as shipped (T = 1)": ece(raw_probs, y)}
    if any_cal:
        tables["temperature-scaled"] = reliability(calibrated_probs, y)
        eces["temperature-scaled"] = ece(calibrated_probs, y)
    title = f"{stem} on {Path(got.source).name} ({len(y)} faces)"
    files += write_reliability(out, tables, eces, title)
    if got.kind == "faces":
        (out / "no_face.txt").write_text("".join(f + "\n" for f in got.no_face))
        files.append("no_face.txt")
    if got.files:
        per_image = [
            {
                "file": f,
                "true": labels[t],
                "predicted": labels[int(p.argmax())],
                "confidence": float(p.max()),
            }
            for f, t, p in zip(got.files, y, calibrated_probs, strict=True)
        ]
        (out / "predictions.json").write_text(json.dumps(per_image, indent=1))
        files.append("predictions.json")
    ensemble = compare_ensemble(got, models, out) if extra_models else None
    if ensemble:
        files += ["ensemble.txt", "ensemble.json"]
    summary = {
        "model": str(model),
        "models": [str(p) for p in models],
        "data": got.source,
        "kind": got.kind,
        "split": split if got.kind == "fer2013" else None,
        "images": got.images,
        "n": len(y),
        "accuracy": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "per_class_accuracy": {k: v["recall"] for k, v in m["per_class"].items()},
        "calibrated": [c is not None for c in cals],
        "temperature": [c.temperature if c else None for c in cals],
        "ece_bins": ECE_BINS,
        "ece_before": eces["as shipped (T = 1)"],
        "ece_after": eces.get("temperature-scaled"),
        "no_face": got.no_face if got.kind == "faces" else None,
        "detect_ms_per_image": round(got.detect_ms, 3) if got.kind == "faces" else None,
        "ensemble": ensemble,
        "out": str(out),
        "files": sorted({*files, "metrics.json"}),
    }
    (out / "metrics.json").write_text(json.dumps(summary | {"per_class": m["per_class"]}, indent=1))
    return summary


def _write_common(out: Path, m: dict, labels: tuple[str, ...], history: list | None) -> list[str]:
    (out / "classification_report.txt").write_text(report_text(m))
    (out / "confusion_matrix.json").write_text(
        json.dumps(
            {
                "labels": list(labels),
                "rows": "true",
                "columns": "predicted",
                "matrix": m["confusion_matrix"],
            },
            indent=1,
        )
    )
    return ["classification_report.txt", "confusion_matrix.json", *plot(m, labels, history, out)]


def _evaluate_checkpoint(
    data: Path, model: Path, split: str, out: str | Path | None, batch: int
) -> dict:
    """A .pt checkpoint on a FER2013-format split (PyTorch, no temperature)."""
    predict, labels, size, history = torch_predictor(model)
    if sorted(labels) != sorted(LABELS):
        raise ValueError(f"{model}: labels {list(labels)} are not the FER2013 labels")
    ds = load_split(data, split, size)
    # The model's output order may differ from FER2013's; map data labels into it.
    y = np.array([labels.index(LABELS[i]) for i in ds.labels])
    probs = np.concatenate([predict(ds.images[i : i + batch]) for i in range(0, len(y), batch)])
    m = metrics(y, probs.argmax(1), labels)
    out = Path(out) if out else model.parent / f"eval-{model.stem}-{split}"
    out.mkdir(parents=True, exist_ok=True)
    files = _write_common(out, m, labels, history)
    eces = {"model": ece(probs, y)}
    files += write_reliability(out, {"model": reliability(probs, y)}, eces, model.name)
    summary = {
        "model": str(model),
        "data": ds.source,
        "kind": "fer2013",
        "split": split,
        "n": len(y),
        "accuracy": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "per_class_accuracy": {k: v["recall"] for k, v in m["per_class"].items()},
        "ece_bins": ECE_BINS,
        "ece_before": eces["model"],
        "ece_after": None,
        "out": str(out),
        "files": sorted({*files, "metrics.json"}),
    }
    (out / "metrics.json").write_text(json.dumps(summary | {"per_class": m["per_class"]}, indent=1))
    return summary
