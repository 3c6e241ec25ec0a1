"""Train an emotion CNN on FER2013-format data; checkpoints carry config, labels and contract."""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from training import archs
from training.data import LABELS, load_train_val

log = logging.getLogger(__name__)
MEAN = STD = 127.5  # (x / 255 - 0.5) * 2, the shipped model's normalisation


@dataclass
class TrainConfig:
    data: str = ""
    arch: str = "mini_xception"
    out: str = "runs/train"
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 15  # early stopping: epochs without a better validation accuracy
    lr_patience: int = 5  # ReduceLROnPlateau on validation accuracy
    lr_factor: float = 0.5
    val_fraction: float = 0.1  # held out of train when there is no PublicTest / val split
    augment: bool = True
    class_weights: bool = True  # FER2013: 436 disgust vs 7,215 happy training images
    init: str = ""  # "", "shipped" or a path to an ONNX with the shipped initializer names
    seed: int = 0
    device: str = "auto"


def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("mps" if torch.backends.mps.is_available() else "cpu")


def normalise(x: torch.Tensor) -> torch.Tensor:
    """uint8 N×H×W → float N×1×H×W in [-1, 1]."""
    return ((x.float() - MEAN) / STD).unsqueeze(1)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random h-flip, ±10° rotation, ±10% scale and shift, as one batched affine warp.

    Done on the device in one grid_sample, so augmentation never starves a GPU of work.
    """
    n = len(x)
    r = torch.rand(n, 5, generator=gen)
    angle = (r[:, 0] - 0.5) * math.radians(20)
    scale = 0.9 + 0.2 * r[:, 1]
    flip = torch.where(r[:, 2] < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos * flip, -sin, (r[:, 3] - 0.5) * 0.2], 1),
            torch.stack([sin * flip, cos, (r[:, 4] - 0.5) * 0.2], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


def class_weights(labels: np.ndarray) -> torch.Tensor:
    """Inverse class frequency (average weight per image 1); absent classes weigh 0."""
    counts = np.bincount(labels, minlength=len(LABELS)).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / (counts > 0).sum(), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def train_step(model, opt, x, y, loss_fn, gen: torch.Generator | None) -> tuple[float, int]:
    """One optimisation step on a uint8 batch; returns (loss, correct)."""
    inputs = normalise(x)
    if gen is not None:
        inputs = augment(inputs, gen)
    logits = model(inputs)
    loss = loss_fn(logits, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item(), int((logits.argmax(1) == y).sum())


@torch.no_grad()
def evaluate(model, images: torch.Tensor, labels: torch.Tensor, batch: int = 512):
    """(mean loss, accuracy) in eval mode."""
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(labels), batch):
        logits = model(normalise(images[i : i + batch]))
        loss += F.cross_entropy(logits, labels[i : i + batch], reduction="sum").item()
        correct += int((logits.argmax(1) == labels[i : i + batch]).sum())
    return loss / len(labels), correct / len(labels)


def make_config(given: dict[str, Any], resume: str | None = None) -> TrainConfig:
    """Config from explicit options, on top of a resumed run's own config when resuming."""
    names = {f.name for f in fields(TrainConfig)}
    unknown = set(given) - names
    if unknown:
        raise ValueError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    saved = {}
    if resume:
        state = torch.load(resume, map_location="cpu", weights_only=True)
        saved = {k: v for k, v in state["config"].items() if k in names}
    return TrainConfig(**(saved | given))


def checkpoint(model, opt, sched, cfg, epoch, best, history, gen) -> dict[str, Any]:
    size = archs.input_size(cfg.arch)
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "epoch": epoch,
        "best_accuracy": best,
        "history": history,
        "config": asdict(cfg),
        "arch": cfg.arch,
        "labels": list(LABELS),
        "input": {"height": size, "width": size, "colour": "grey", "mean": MEAN, "std": STD},
        "rng": {"torch": torch.get_rng_state(), "augment": gen.get_state()},
        "created": time.strftime("%Y-%m-%d"),
        "torch": str(torch.__version__),
    }


def fit(cfg: TrainConfig, resume: str | None = None) -> dict[str, Any]:
    """Train; writes last.pt every epoch and best.pt on a better validation accuracy."""
    state = torch.load(resume, map_location="cpu", weights_only=True) if resume else None
    torch.manual_seed(cfg.seed)
    device, size = pick_device(cfg.device), archs.input_size(cfg.arch)
    if cfg.init and cfg.arch != "mini_xception":
        raise ValueError(f"--init loads mini_xception weights, not {cfg.arch}")
    train, val = load_train_val(cfg.data, size, cfg.val_fraction, cfg.seed)
    log.info(
        "data: %d train %s, %d val (%s), device %s",
        len(train),
        train.counts().tolist(),
        len(val),
        val.source,
        device,
    )
    xt, yt, xv, yv = (
        torch.from_numpy(a).to(device) for a in (train.images, train.labels, val.images, val.labels)
    )
    model = archs.build(cfg.arch)
    if cfg.init and not state:
        archs.load_shipped(model, archs.SHIPPED_ONNX if cfg.init == "shipped" else cfg.init)
        sample = np.random.default_rng(cfg.seed).permutation(len(train))[:2048]
        archs.recalibrate_bn(model, normalise(torch.from_numpy(train.images[sample])))
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="max", factor=cfg.lr_factor, patience=cfg.lr_patience
    )
    weights = class_weights(train.labels).to(device) if cfg.class_weights else None
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
    gen = torch.Generator().manual_seed(cfg.seed)
    start, best, history = 0, -1.0, []
    if state:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        gen.set_state(state["rng"]["augment"])
        start, best, history = state["epoch"] + 1, state["best_accuracy"], state["history"]
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    for epoch in range(start, cfg.epochs):
        if (
            history
            and epoch - max(history, key=lambda h: h["val_accuracy"])["epoch"] > cfg.patience
        ):
            log.info("early stop: no better validation accuracy for %d epochs", cfg.patience)
            break
        model.train()
        order = torch.randperm(len(yt), generator=gen).to(device)
        loss_sum, correct = 0.0, 0
        batches = range(0, len(order), cfg.batch_size)
        for i in tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=None):
            idx = order[i : i + cfg.batch_size]
            loss, ok = train_step(
                model, opt, xt[idx], yt[idx], loss_fn, gen if cfg.augment else None
            )
            loss_sum, correct = loss_sum + loss * len(idx), correct + ok
        val_loss, val_acc = evaluate(model, xv, yv)
        sched.step(val_acc)
        history.append(
            {
                "epoch": epoch,
                "train_loss": loss_sum / len(yt),
                "train_accuracy": correct / len(yt),
                "val_loss": val_loss,
                "val_accuracy": val_acc,
                "lr": opt.param_groups[0]["lr"],
            }
        )
        log.info(
            "epoch %d: train loss %.4f acc %.4f, val loss %.4f acc %.4f",
            epoch + 1,
            history[-1]["train_loss"],
            history[-1]["train_accuracy"],
            val_loss,
            val_acc,
        )
        improved = val_acc > best
        best = max(best, val_acc)
        torch.save(checkpoint(model, opt, sched, cfg, epoch, best, history, gen), out / "last.pt")
        if improved:
            shutil.copyfile(out / "last.pt", out / "best.pt")
    return {
        "checkpoint": str(out / "best.pt"),
        "last": str(out / "last.pt"),
        "best_val_accuracy": best,
        "epochs": len(history),
        "arch": cfg.arch,
    }
