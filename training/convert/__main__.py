"""``python -m training.convert [--models-dir models]``: convert all pretrained models."""

from __future__ import annotations

import argparse

from training.convert import convert_all


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Convert all pretrained source models to ONNX.")
    ap.add_argument("--models-dir", default="models")
    args = ap.parse_args(argv)
    for name, digest in convert_all(args.models_dir).items():
        print(f"{digest}  {name}")


if __name__ == "__main__":
    main()
