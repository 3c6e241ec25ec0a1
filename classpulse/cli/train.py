"""`classpulse train | evaluate | export-onnx`.

Imports nothing heavy at module level: every command's parser is built from it, and the
service does not have torch installed (it is the optional `train` extra).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

ARCH_NAMES = ("mini_xception", "deep_cnn", "simple_cnn")  # checked again in training.archs


def _setup_logging() -> None:
    if not logging.getLogger().handlers:  # the lead's CLI may have configured logging already
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)


def _fail(exc: Exception) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 2


def _missing_torch() -> int:
    print("error: training needs the train extra: pip install -e '.[train]'", file=sys.stderr)
    return 2


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model; prints one JSON line with the best checkpoint."""
    try:
        from training.train import fit, make_config
    except ImportError:
        return _missing_torch()
    _setup_logging()
    if not args.data and not args.resume:
        return _fail(ValueError("--data is required unless --resume is given"))
    options = (
        "data",
        "arch",
        "epochs",
        "out",
        "init",
        "batch_size",
        "lr",
        "seed",
        "patience",
        "device",
        "class_weights",
        "augment",
    )
    given = {k: getattr(args, k) for k in options if getattr(args, k) is not None}
    try:
        result = fit(make_config(given, args.resume), resume=args.resume)
    except (ValueError, FileNotFoundError) as exc:  # DataError is a ValueError
        return _fail(exc)
    print(json.dumps(result))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a .pt checkpoint or an .onnx model; prints one JSON line with the summary."""
    try:
        from training.evaluate import evaluate
    except ImportError:
        return _missing_torch()
    try:
        summary = evaluate(args.data, args.model, args.split, args.out)
    except (ValueError, FileNotFoundError) as exc:
        return _fail(exc)
    print(json.dumps(summary))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a checkpoint to ONNX with the model contract; fails on a parity mismatch."""
    try:
        from training.data import load_split
        from training.export import ExportError, export_onnx, load_checkpoint
    except ImportError:
        return _missing_torch()
    try:
        data = None
        if args.data:  # real images for the parity check, on top of the synthetic ones
            size = load_checkpoint(args.checkpoint)[1]["input"]["height"]
            data = load_split(args.data, args.split, size).images
        result = export_onnx(args.checkpoint, args.out, data)
    except (ExportError, ValueError, FileNotFoundError) as exc:
        return _fail(exc)
    print(json.dumps(result))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the training subcommands to the classpulse CLI."""
    p = subparsers.add_parser(
        "train", help="train an emotion CNN on FER2013-format data", description=cmd_train.__doc__
    )
    p.add_argument("--data", help="fer2013.csv or a folder with train/<label>/ (val/, test/)")
    p.add_argument("--arch", choices=ARCH_NAMES, help="network (default mini_xception)")
    p.add_argument("--epochs", type=int, help="maximum epochs (default 100)")
    p.add_argument("--out", help="checkpoint folder (default runs/train)")
    p.add_argument("--init", help="'shipped' to fine-tune the shipped mini_xception, or an .onnx")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="Adam learning rate (default 1e-3)")
    p.add_argument("--seed", type=int)
    p.add_argument("--patience", type=int, help="early stopping patience in epochs (default 15)")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, mps")
    p.add_argument(
        "--class-weights",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="weight the loss by inverse class frequency (default on)",
    )
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="flip, rotate, scale and shift training images (default on)",
    )
    p.add_argument("--resume", metavar="CKPT", help="continue from a last.pt checkpoint")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser(
        "evaluate",
        help="evaluate a .pt checkpoint or .onnx model",
        description=cmd_evaluate.__doc__,
    )
    p.add_argument("--data", required=True, help="fer2013.csv or an image folder dataset")
    p.add_argument("--model", required=True, help="a .pt checkpoint or an .onnx model")
    p.add_argument(
        "--split",
        default="PrivateTest",
        help="Training, PublicTest, PrivateTest (folders: train, val, test)",
    )
    p.add_argument("--out", help="report folder (default next to the model)")
    p.set_defaults(func=cmd_evaluate)

    p = subparsers.add_parser(
        "export-onnx", help="export a checkpoint for the service", description=cmd_export.__doc__
    )
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--data", help="also check parity on images of this dataset")
    p.add_argument("--split", default="PrivateTest", help="split used with --data")
    p.set_defaults(func=cmd_export)
