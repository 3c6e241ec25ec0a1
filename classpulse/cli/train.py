"""`classpulse train | evaluate | calibrate | export-onnx`.

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
        summary = evaluate(
            args.data,
            args.model,
            args.split,
            args.out,
            extra_models=args.extra_model or (),
            crops_only=args.crops_only,
            detector=args.detector,
        )
    except (ValueError, FileNotFoundError) as exc:
        return _fail(exc)
    print(json.dumps(summary))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Fit an ONNX classifier's temperature on a labelled held-out set and write a copy whose
    metadata carries it (weights untouched); prints one JSON line."""
    try:
        from training.calibrate import calibrate_onnx
    except ImportError:
        return _missing_torch()
    try:
        result = calibrate_onnx(
            args.model,
            args.data,
            args.out,
            split=args.split,
            target=args.target_accuracy,
            crops_only=args.crops_only,
            detector=args.detector,
            dataset_name=args.dataset_name,
        )
    except ImportError:  # onnx, to write the metadata
        return _missing_torch()
    except (ValueError, FileNotFoundError) as exc:
        return _fail(exc)
    print(json.dumps(result))
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
        if args.data and args.calibrate_split != "none":
            # Temperature from a held-out split (not the test split the report is made on).
            from training.calibrate import calibrate_onnx
            from training.data import DataError

            try:
                cal = calibrate_onnx(
                    args.out, args.data, args.out, args.calibrate_split, args.target_accuracy
                )
                result |= {"sha256": cal["sha256"], "calibration": cal["calibration"]}
            except DataError as exc:  # no such split: the model stays "not calibrated"
                result |= {"calibration": None, "not_calibrated": str(exc)}
    except (ExportError, ValueError, FileNotFoundError) as exc:
        return _fail(exc)
    print(json.dumps(result))
    return 0


def _target(value: str) -> float:
    x = float(value)
    if not 0 < x < 1:
        raise argparse.ArgumentTypeError("an accuracy between 0 and 1, e.g. 0.7")
    return x


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
    p.add_argument(
        "--data",
        required=True,
        help="fer2013.csv, FER2013 folders (train/ val/ test/), or a folder of face photos or "
        "video frames labelled by folder name (happy/*.jpg) run through detector → crop → model",
    )
    p.add_argument("--model", required=True, help="a .pt checkpoint or an .onnx model")
    p.add_argument(
        "--split",
        default="PrivateTest",
        help="Training, PublicTest, PrivateTest (folders: train, val, test)",
    )
    p.add_argument("--out", help="report folder (default next to the model)")
    p.add_argument(
        "--extra-model",
        action="append",
        metavar="ONNX",
        help="average with this model too (an ensemble, as CLASSPULSE_EXTRA_EMOTION_MODELS); "
        "also measures each model alone: accuracy, ECE, ms per face",
    )
    p.add_argument(
        "--crops-only",
        action="store_true",
        help="face folders hold already-cropped faces: no detector",
    )
    p.add_argument("--detector", help="detector ONNX for face folders (default full range)")
    p.set_defaults(func=cmd_evaluate)

    p = subparsers.add_parser(
        "calibrate",
        help="fit an .onnx classifier's temperature on a labelled held-out set",
        description=cmd_calibrate.__doc__,
    )
    p.add_argument("--model", required=True, help="the .onnx classifier")
    p.add_argument("--data", required=True, help="as for evaluate: CSV, FER folders or faces")
    p.add_argument("--split", default="PublicTest", help="held-out split (default PublicTest)")
    p.add_argument("--out", required=True, help="the calibrated .onnx to write (may be --model)")
    p.add_argument(
        "--target-accuracy",
        type=_target,
        default=0.7,
        help="derive the 'uncertain' threshold: the confidence above which the calibrated model "
        "was right at least this often on the set (default 0.7)",
    )
    p.add_argument(
        "--dataset-name",
        help="how pages name the set, e.g. 'FER2013 PublicTest' (default: its file name)",
    )
    p.add_argument("--crops-only", action="store_true", help="face folders are crops already")
    p.add_argument("--detector", help="detector ONNX for face folders (default full range)")
    p.set_defaults(func=cmd_calibrate)

    p = subparsers.add_parser(
        "export-onnx", help="export a checkpoint for the service", description=cmd_export.__doc__
    )
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--data", help="also check parity on images of this dataset")
    p.add_argument("--split", default="PrivateTest", help="split used with --data")
    p.add_argument(
        "--calibrate-split",
        default="PublicTest",
        help="with --data: fit the temperature on this held-out split ('none': don't)",
    )
    p.add_argument("--target-accuracy", type=_target, default=0.7, help="as for calibrate")
    p.set_defaults(func=cmd_export)
