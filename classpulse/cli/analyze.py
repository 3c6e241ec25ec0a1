"""`classpulse analyze FILE...`: the arguments here; the work in worker/analyze.py, imported only
when the command runs (OpenCV and onnxruntime stay out of every other command)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="find faces and emotions in images and videos")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--json", action="store_true", help="JSON Lines, one object per image/frame")
    p.add_argument("--annotate", type=Path, metavar="DIR", help="write annotated copies here")
    p.add_argument("--every", type=int, default=1, metavar="N", help="analyse every Nth frame")
    p.add_argument("--emotion-model", type=Path, help="ONNX emotion model (default: shipped)")
    p.add_argument("--detector-model", type=Path, help="ONNX face detector (default: shipped)")
    p.set_defaults(func=cmd_analyze)


def cmd_analyze(args: argparse.Namespace) -> int:
    from worker.analyze import run

    return run(args)
