"""Temperature scaling, expected calibration error and reliability tables.

One scalar per model (Guo et al., "On Calibration of Modern Neural Networks", 2017): the
temperature T that minimises the negative log-likelihood of a labelled held-out set, applied
as ``softmax(z / T)``. It never changes the top label, only how sure the model says it is.
The shipped models output probabilities; ``log(p)`` are their logits up to a constant per row.

``calibrate_onnx`` writes a copy of an ONNX model whose graph and weights are untouched and
whose metadata carries the temperature, what it was fitted on, the accuracy and ECE before and
after, the reliability table and the confidence threshold derived from it
(classpulse/modelmeta.py ``Calibration``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from classpulse.modelmeta import Calibration

ECE_BINS = 15
T_RANGE = (0.05, 20.0)
DEFAULT_TARGET = 0.7  # the accuracy the "uncertain" threshold is derived for
MIN_ABOVE = 30  # a threshold must leave at least this many images above it to be trusted


def log_probs(probs: np.ndarray) -> np.ndarray:
    """Logits up to a per-row constant, from probabilities."""
    return np.log(np.maximum(probs.astype(np.float64), 1e-30))


def softmax_t(z: np.ndarray, t: float) -> np.ndarray:
    z = z / t
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def nll(z: np.ndarray, y: np.ndarray, t: float) -> float:
    """Mean negative log-likelihood of labels ``y`` under ``softmax(z / t)``."""
    s = z / t
    s = s - s.max(1, keepdims=True)
    logp = s - np.log(np.exp(s).sum(1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


def fit_temperature(z: np.ndarray, y: np.ndarray) -> float:
    """argmin_T NLL on a log-spaced grid, refined by golden-section search (NLL is smooth and,
    in log T, unimodal in practice); bounded to ``T_RANGE``."""
    if len(y) == 0:
        raise ValueError("no labelled images to fit a temperature on")
    lo, hi = math.log(T_RANGE[0]), math.log(T_RANGE[1])
    grid = np.linspace(lo, hi, 61)
    losses = [nll(z, y, math.exp(g)) for g in grid]
    k = int(np.argmin(losses))
    a, b = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = nll(z, y, math.exp(c)), nll(z, y, math.exp(d))
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = nll(z, y, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = nll(z, y, math.exp(d))
    return float(math.exp((a + b) / 2))


def reliability(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Per equal-width bin of top probability: its range, how many images, their mean
    confidence and how often the top label was right."""
    conf, pred = probs.max(1), probs.argmax(1)
    correct = pred == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds (edges[i], edges[i+1]]; a confidence of exactly 0 goes to the first.
    idx = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    out = []
    for i in range(bins):
        m = idx == i
        n = int(m.sum())
        out.append(
            {
                "lo": round(float(edges[i]), 6),
                "hi": round(float(edges[i + 1]), 6),
                "count": n,
                "confidence": float(conf[m].mean()) if n else 0.0,
                "accuracy": float(correct[m].mean()) if n else 0.0,
            }
        )
    return out


def ece(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: the count-weighted mean |accuracy − confidence| over bins."""
    n = max(len(y), 1)
    return float(
        sum(
            b["count"] / n * abs(b["accuracy"] - b["confidence"])
            for b in reliability(probs, y, bins)
        )
    )


def confidence_threshold(
    probs: np.ndarray, y: np.ndarray, target: float, min_count: int = MIN_ABOVE
) -> tuple[float, float, float] | None:
    """The lowest confidence c such that, of the images whose top probability is at least c,
    at least ``target`` were right — with at least ``min_count`` of them (fewer say nothing).
    Returns (c, accuracy at and above c, share of images at and above c); None if no c does.
    """
    conf = probs.max(1)
    correct = (probs.argmax(1) == y).astype(np.float64)
    order = np.argsort(-conf, kind="stable")
    conf, correct = conf[order], correct[order]
    acc = np.cumsum(correct) / np.arange(1, len(conf) + 1)
    # Only cut between distinct confidences: ties are all in or all out.
    last_of_value = np.r_[conf[1:] != conf[:-1], True]
    ok = np.flatnonzero(
        (acc >= target) & last_of_value & (np.arange(1, len(conf) + 1) >= min_count)
    )
    if not len(ok):
        return None
    k = int(ok.max())
    return float(conf[k]), float(acc[k]), float((k + 1) / len(conf))


def calibration_for(
    probs: np.ndarray,
    y: np.ndarray,
    dataset: str,
    target: float = DEFAULT_TARGET,
    output: str = "probabilities",
) -> Calibration:
    """Fit T on (probs, y), measure before and after, derive the threshold for ``target``."""
    z = log_probs(probs) if output == "probabilities" else probs.astype(np.float64)
    before = softmax_t(z, 1.0)
    t = fit_temperature(z, y)
    after = softmax_t(z, t)
    threshold = confidence_threshold(after, y, target)
    return Calibration(
        temperature=round(t, 6),
        dataset=dataset,
        size=len(y),
        accuracy=float((after.argmax(1) == y).mean()),
        ece_before=round(ece(before, y), 6),
        ece_after=round(ece(after, y), 6),
        nll_before=round(nll(z, y, 1.0), 6),
        nll_after=round(nll(z, y, t), 6),
        bins=ECE_BINS,
        reliability=tuple(reliability(after, y)),
        target_accuracy=target,
        uncertain_below=round(threshold[0], 4) if threshold else None,
        accuracy_above=round(threshold[1], 4) if threshold else None,
        coverage_above=round(threshold[2], 4) if threshold else None,
    )


def write_calibrated(model: Path, out: Path, calibration: Calibration) -> dict:
    """Copy ``model`` to ``out`` with the calibration in its metadata; graph and weights are
    the same bytes (checked), any earlier calibration keys are replaced."""
    import onnx

    from training.convert.common import sha256_file

    proto = onnx.load(str(model))
    keep = [
        (p.key, p.value)
        for p in proto.metadata_props
        if p.key not in calibration.to_metadata() and not p.key.startswith("classpulse.calibration")
    ]
    del proto.metadata_props[:]
    for key, value in [*keep, *calibration.to_metadata().items()]:
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(out))
    same = [
        a.raw_data == b.raw_data
        for a, b in zip(
            onnx.load(str(model)).graph.initializer,
            onnx.load(str(out)).graph.initializer,
            strict=True,
        )
    ]
    if not all(same):  # cannot happen with metadata-only edits; never ship it if it did
        out.unlink()
        raise RuntimeError(f"{out}: weights changed while writing metadata")
    return {"onnx": str(out), "sha256": sha256_file(out)}


def calibrate_onnx(
    model: str | Path,
    data: str | Path,
    out: str | Path,
    split: str = "PublicTest",
    target: float = DEFAULT_TARGET,
    crops_only: bool = False,
    detector: str | Path | None = None,
    dataset_name: str | None = None,
) -> dict:
    """Fit the temperature of an ONNX classifier on a labelled set (FER2013 CSV or folders, or
    an ImageFolder of face photos run through the detector) and write the calibrated copy."""
    from training.evaluate import labelled_probs

    model, out = Path(model), Path(out)
    got = labelled_probs(
        data, [model], split, calibrated=False, crops_only=crops_only, detector=detector
    )
    c = got.classifier.models[0].contract
    # What pages will name: the set's file name (no local path), or what the user calls it.
    name = dataset_name or Path(got.source).name
    cal = calibration_for(got.members[0], got.y, name, target, "probabilities")
    result = write_calibrated(model, out, cal)
    return result | {
        "model": str(model),
        "output_kind": c.output,
        "calibration": cal.summary(),
        "no_face": got.no_face,
    }


def reliability_text(table: list[dict[str, float]]) -> str:
    lines = [f"{'bin':>13} {'count':>7} {'confidence':>11} {'accuracy':>9} {'gap':>7}"]
    for b in table:
        gap = b["accuracy"] - b["confidence"] if b["count"] else 0.0
        conf = f"{b['confidence']:11.3f}" if b["count"] else f"{'—':>11}"
        acc = f"{b['accuracy']:9.3f}" if b["count"] else f"{'—':>9}"
        lines.append(f"{b['lo']:5.3f}–{b['hi']:5.3f}  {b['count']:7d} {conf} {acc} {gap:+7.3f}")
    return "\n".join(lines) + "\n"


def plot_reliability(
    tables: dict[str, list[dict[str, float]]], eces: dict[str, float], path: Path, title: str
) -> None:
    """Reliability diagram: accuracy per confidence bin against the diagonal, one series per
    table (e.g. before and after temperature scaling), and the counts underneath."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, hist) = plt.subplots(
        2, 1, figsize=(5.5, 6.5), gridspec_kw={"height_ratios": [3, 1]}, sharex=True
    )
    ax.plot([0, 1], [0, 1], color="#888", linestyle="--", linewidth=1, label="perfect")
    width = 1.0 / ECE_BINS
    for i, (name, table) in enumerate(tables.items()):
        xs = [b["confidence"] for b in table if b["count"]]
        ys = [b["accuracy"] for b in table if b["count"]]
        ax.plot(xs, ys, marker="o", label=f"{name} (ECE {eces[name]:.3f})")
        lefts = [b["lo"] + i * width / len(tables) for b in table]
        hist.bar(
            lefts, [b["count"] for b in table], width=width / len(tables), align="edge", label=name
        )
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=title)
    ax.legend(loc="upper left", fontsize=8)
    hist.set(xlabel="confidence (top probability)", ylabel="images")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_reliability(
    out: Path, tables: dict[str, list[dict[str, float]]], eces: dict[str, float], title: str
) -> list[str]:
    """reliability.png, reliability.json and reliability.txt under ``out``."""
    (out / "reliability.json").write_text(
        json.dumps({"bins": ECE_BINS, "ece": eces, "tables": tables}, indent=1)
    )
    text = "".join(
        f"{name} (ECE {eces[name]:.4f})\n{reliability_text(t)}\n" for name, t in tables.items()
    )
    (out / "reliability.txt").write_text(text)
    plot_reliability(tables, eces, out / "reliability.png", title)
    return ["reliability.png", "reliability.json", "reliability.txt"]
