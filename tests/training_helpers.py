"""Helpers shared by test modules, moved out of tests/test_training.py: no test module
imports another (tests/test_layering.py)."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from classpulse.cli import train as cli  # noqa: E402


def faces(labels, seed=0, side=48) -> np.ndarray:
    """Learnable stand-ins: a bright square whose position encodes the label, plus noise."""
    rng = np.random.default_rng(seed)
    out = rng.normal(100, 20, (len(labels), side, side))
    for img, label in zip(out, labels, strict=True):
        r, c = divmod(int(label), 3)
        img[6 + 14 * r : 18 + 14 * r, 6 + 14 * c : 18 + 14 * c] += 120
    return np.clip(out, 0, 255).astype(np.uint8)


def write_csv(path: Path, per_class=(6, 2, 2), header=("emotion", "pixels", "Usage")) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for seed, (usage, n) in enumerate(
            zip(("Training", "PublicTest", "PrivateTest"), per_class, strict=True)
        ):
            labels = np.repeat(np.arange(7), n)
            for label, img in zip(labels, faces(labels, seed), strict=True):
                w.writerow([label, " ".join(map(str, img.ravel())), usage])
    return path


def run(*argv: str, capsys) -> tuple[int, dict | None, str]:
    """Run a training subcommand through argparse; (exit code, JSON line, stderr)."""
    parser = argparse.ArgumentParser(prog="classpulse")
    cli.register(parser.add_subparsers(required=True))
    args = parser.parse_args([str(a) for a in argv])
    code = args.func(args)
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    return code, json.loads(lines[-1]) if code == 0 else None, err
