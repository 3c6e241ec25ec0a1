"""Evaluate a checkpoint or any contract-carrying ONNX model on a FER2013-format split."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from training.data import LABELS, load_split

Predict = Callable[[np.ndarray], np.ndarray]  # uint8 N×H×W → probabilities N×C


def onnx_predictor(path: Path) -> tuple[Predict, tuple[str, ...], int, None]:
    """Run with onnxruntime as the service does: size, layout, scaling and labels from metadata."""
    import onnxruntime as ort

    from classpulse.modelmeta import ModelContract

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    c = ModelContract.from_metadata(session.get_modelmeta().custom_metadata_map)
    if c.input_height != c.input_width:
        raise ValueError(f"{path}: non-square input {c.input_height}×{c.input_width}")

    def predict(images: np.ndarray) -> np.ndarray:
        x = (images.astype(np.float32) - c.mean) / c.std
        x = np.repeat(x[..., None], c.channels, axis=-1)  # grey data for an RGB model
        if c.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        out = session.run(None, {c.input_name: np.ascontiguousarray(x)})[0]
        if c.output == "logits":
            e = np.exp(out - out.max(1, keepdims=True))
            out = e / e.sum(1, keepdims=True)
        return out

    return predict, c.labels, c.input_height, None


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


def evaluate(
    data: str | Path,
    model: str | Path,
    split: str = "PrivateTest",
    out: str | Path | None = None,
    batch: int = 256,
) -> dict:
    """Accuracy and a classification report; files under out (default: next to the model)."""
    model = Path(model)
    if not model.is_file():
        raise FileNotFoundError(f"{model}: no such model file")
    loader = onnx_predictor if model.suffix == ".onnx" else torch_predictor
    predict, labels, size, history = loader(model)
    if sorted(labels) != sorted(LABELS):
        raise ValueError(f"{model}: labels {list(labels)} are not the FER2013 labels")
    ds = load_split(data, split, size)
    # The model's output order may differ from FER2013's; map data labels into it.
    y = np.array([labels.index(LABELS[i]) for i in ds.labels])
    probs = np.concatenate([predict(ds.images[i : i + batch]) for i in range(0, len(y), batch)])
    m = metrics(y, probs.argmax(1), labels)
    out = Path(out) if out else model.parent / f"eval-{model.stem}-{split}"
    out.mkdir(parents=True, exist_ok=True)
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
    files = plot(m, labels, history, out)
    summary = {
        "model": str(model),
        "data": ds.source,
        "split": split,
        "n": len(y),
        "accuracy": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "per_class_accuracy": {k: v["recall"] for k, v in m["per_class"].items()},
        "out": str(out),
        "files": ["classification_report.txt", "confusion_matrix.json", "metrics.json", *files],
    }
    (out / "metrics.json").write_text(json.dumps(summary | {"per_class": m["per_class"]}, indent=1))
    return summary
