"""Export a training checkpoint to ONNX with the ClassPulse model contract, then prove parity."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from classpulse.modelmeta import ModelContract
from training import archs
from training.convert.common import sha256_file

OPSET = 17
PARITY_ATOL = 1e-5  # max |Δp|; a correct export is ~1e-7, a wrong pad or BN is ~1e-2


class ExportError(RuntimeError):
    """The exported model is invalid or does not reproduce the checkpoint's outputs."""


class Deployed(nn.Module):
    """NHWC normalised input → probabilities, the shipped model's interface."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x.permute(0, 3, 1, 2)), dim=1)


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict]:
    """The checkpoint's model in eval mode on the CPU, and the checkpoint itself."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = archs.build(state["arch"], len(state["labels"]))
    model.load_state_dict(state["model"])
    return model.eval(), state


def contract_for(checkpoint: str | Path, state: dict) -> ModelContract:
    digest, inp = sha256_file(checkpoint), state["input"]
    return ModelContract(
        kind="emotion_classifier",
        name=state["arch"],
        version=f"trained-{state.get('created', 'unknown')}-{digest[:8]}",
        input_name="input",
        input_height=inp["height"],
        input_width=inp["width"],
        layout="NHWC",
        colour=inp["colour"],
        mean=inp["mean"],
        std=inp["std"],
        labels=tuple(state["labels"]),
        output="probabilities",
        source={
            "checkpoint": Path(checkpoint).name,
            "sha256": digest,
            "arch": state["arch"],
            "epoch": state.get("epoch"),
            "best_val_accuracy": state.get("best_accuracy"),
        },
    )


def parity_inputs(contract: ModelContract, data: np.ndarray | None, seed: int = 0) -> np.ndarray:
    """Uniform noise, smooth noise (face-like spectra) and, when given, real uint8 images."""
    rng = np.random.default_rng(seed)
    h, w = contract.input_height, contract.input_width
    batches = [rng.uniform(0, 255, (5, h, w))]
    coarse = rng.uniform(0, 255, (5, h // 8 + 1, w // 8 + 1))
    batches.append(np.kron(coarse, np.ones((8, 8)))[:, :h, :w])
    if data is not None:
        batches.append(data[:16].astype(np.float64))
    x = np.concatenate(batches)
    return ((x - contract.mean) / contract.std).astype(np.float32)[..., None]


def export_onnx(
    checkpoint: str | Path,
    out: str | Path,
    data: np.ndarray | None = None,
    atol: float = PARITY_ATOL,
) -> dict:
    """Write out.onnx; remove it and raise ExportError if checks or parity fail."""
    model, state = load_checkpoint(checkpoint)
    contract = contract_for(checkpoint, state)
    wrapped, out = Deployed(model).eval(), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    x = torch.from_numpy(parity_inputs(contract, data))
    try:
        # The TorchScript exporter gives a plain, static graph with named initializers and
        # needs no onnxscript; the batch axis is the only dynamic one.
        with warnings.catch_warnings():
            # int(shape) in tf_same_max_pool is intended: H and W are static.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # The TorchScript exporter is deprecated since 2.9 but still in 2.13 (pinned); the
            # dynamo one would need onnxscript, which is not a dependency.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                wrapped,
                (x[:2],),
                str(out),
                dynamo=False,
                opset_version=OPSET,
                input_names=["input"],
                output_names=["probs"],
                dynamic_axes={"input": {0: "batch"}, "probs": {0: "batch"}},
            )
        proto = onnx.load(str(out))
        for key, value in contract.to_metadata().items():
            proto.metadata_props.add(key=key, value=value)
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(out))
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        with torch.no_grad():
            expected = wrapped(x).numpy()
        # Run in two different batch sizes to exercise the dynamic axis.
        got = np.concatenate(
            [
                session.run(["probs"], {"input": x[:1].numpy()})[0],
                session.run(["probs"], {"input": x[1:].numpy()})[0],
            ]
        )
        delta = float(np.abs(got - expected).max())
        if not delta <= atol:
            raise ExportError(f"ONNX output differs from PyTorch by {delta:.2e} > {atol:.0e}")
    except Exception:
        out.unlink(missing_ok=True)
        raise
    return {
        "onnx": str(out),
        "max_abs_diff": delta,
        "parity_inputs": len(x),
        "version": contract.version,
        "labels": list(contract.labels),
        "sha256": sha256_file(out),
    }
