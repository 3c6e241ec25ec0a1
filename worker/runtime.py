"""The one onnxruntime wrapper every ClassPulse model runs through.

Picks execution providers from a preference list intersected with what the installed
onnxruntime offers, caps CPU threads, reads the model's contract from its metadata, warms up at
load (the first run, above all on a GPU, is slow) and checks the providers actually obtained:
onnxruntime falls back to the CPU silently when CUDA libraries are missing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from classpulse.modelmeta import ModelContract

log = logging.getLogger(__name__)

# Short names accepted in settings -> onnxruntime provider names.
PROVIDER_ALIASES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
GPU_PROVIDERS = frozenset(
    PROVIDER_ALIASES[k] for k in ("tensorrt", "cuda", "rocm", "coreml", "dml")
)


class GPUUnavailableError(RuntimeError):
    """A GPU was required (CLASSPULSE_REQUIRE_GPU) but the session runs on the CPU."""


def choose_providers(preferred: Sequence[str], available: Sequence[str]) -> list[str]:
    """Keep the preferred providers that are installed, in preference order, CPU always last.

    TensorRT is never added implicitly: it must be named in ``preferred`` (its engine build
    takes minutes at first start and it needs its own libraries).
    """
    chosen: list[str] = []
    for name in preferred:
        full = PROVIDER_ALIASES.get(name.lower(), name)
        if full in available and full not in chosen:
            chosen.append(full)
        elif full not in available:
            log.info("execution provider %s is not available in this onnxruntime", full)
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


class OnnxModel:
    """An InferenceSession with its contract; ``predict`` runs a batch of prepared inputs."""

    def __init__(
        self,
        path: str | Path,
        *,
        providers: Sequence[str] = ("cuda", "cpu"),
        intra_op_threads: int = 1,
        require_gpu: bool = False,
        warmup: bool = True,
        cpu_max_batch: int | None = 8,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"model file not found: {self.path}")
        options = ort.SessionOptions()
        # A worker is one process per core (or per GPU); more threads per session only contend.
        options.intra_op_num_threads = max(1, intra_op_threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        wanted = choose_providers(providers, ort.get_available_providers())
        self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=wanted)
        self.providers = self.session.get_providers()
        self.contract = ModelContract.from_metadata(
            self.session.get_modelmeta().custom_metadata_map
        )
        inp = self.session.get_inputs()[0]
        if inp.name != self.contract.input_name:
            raise ValueError(
                f"{self.path.name}: metadata names input {self.contract.input_name!r}, "
                f"the graph has {inp.name!r}"
            )
        # A fixed batch dimension (an int) means we must feed one sample at a time.
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
        self.output_names = [o.name for o in self.session.get_outputs()]
        log.info(
            "loaded %s (%s %s) on %s",
            self.path.name,
            self.contract.name,
            self.contract.version,
            ", ".join(self.providers),
        )
        if require_gpu and not GPU_PROVIDERS.intersection(self.providers):
            raise GPUUnavailableError(
                f"{self.path.name}: a GPU was required but onnxruntime runs it on "
                f"{self.providers} (asked for {wanted}); install onnxruntime-gpu with matching "
                "CUDA/cuDNN libraries or unset CLASSPULSE_REQUIRE_GPU"
            )
        # On the CPU, per-sample cost rises with the chunk once activations outgrow the core's L2
        # (2 MB here; mini-Xception's first layers hold ≈ 0.5 MB per face, padded to 16 channels):
        # in the worker loop on faces messages the classifier took 390 µs/face in chunks of 8,
        # 411 in 4, 445 in 16, 462 in 32 (bench/bench_worker.py's classifier CPU, one run, load
        # 9-10). A GPU wants the whole batch at once.
        self.max_batch = None if self.uses_gpu else cpu_max_batch
        if warmup:
            self.predict(np.zeros((1, *self.input_shape), np.float32))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Per-sample input shape from the contract, in the model's layout."""
        c = self.contract
        if c.layout == "NHWC":
            return (c.input_height, c.input_width, c.channels)
        return (c.channels, c.input_height, c.input_width)

    @property
    def uses_gpu(self) -> bool:
        return bool(GPU_PROVIDERS.intersection(self.providers))

    def predict(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run a prepared float32 batch (N, ...) and return every output, batch-first."""
        if batch.ndim != 4 or batch.shape[1:] != self.input_shape:
            raise ValueError(
                f"expected a batch of shape (N, {self.input_shape}), got {batch.shape}"
            )
        name = self.contract.input_name
        step = self.fixed_batch or self.max_batch or len(batch)
        if len(batch) <= step and (self.fixed_batch is None or len(batch) == self.fixed_batch):
            return self.session.run(self.output_names, {name: batch})
        # Chunked (a fixed-batch graph, or a large batch on the CPU): run in parts and stack.
        parts = [
            self.session.run(self.output_names, {name: batch[i : i + step]})
            for i in range(0, len(batch), step)
        ]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(self.output_names))]
