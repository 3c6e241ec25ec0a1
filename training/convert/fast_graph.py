"""Exact graph rewrites that make a converted CNN cheaper on onnxruntime's CPU provider.

    python -m training.convert.fast_graph IN.onnx OUT.onnx           # portable: head fold only
    python -m training.convert.fast_graph IN.onnx OUT.onnx --widen   # AVX-512 CPUs only (below)

The rewritten graph computes the same function (outputs equal to float32 rounding, about 1e-7
here; the CLI refuses to write a file that differs by more than 1e-5 or changes a top-1). Only
nodes change: the initializers keep their names, shapes and bytes (``training.archs`` loads
them by name for fine-tuning, and ``classpulse calibrate`` checks they are untouched), every
derived weight is computed in the graph from them by ``Pad`` / ``MatMul`` / ``Reshape`` on
constants, which onnxruntime folds once when it loads the model. The graph's inputs, outputs,
opset and ``metadata_props`` (the ClassPulse contract, and any calibration stored with it) are
kept as they are, so the rewrite can run before or after the metadata is written.

* **Head conv + global average pool → one conv** (``fold_conv_global_pool``; always applied,
  the converter's default). The mean over positions of a linear conv is a linear function of
  the input: a conv whose kernel covers the whole (static) input, ``K[u] = Σ_{output position
  p, tap t with u = p·stride + t − pad} W[t] / (H_out·W_out)``, bias unchanged. For
  mini-Xception's 3×3 head on 4×4 that is 9× fewer multiply-adds and one op less, on any CPU.
* **Zero-padded narrow tensors** (``widen_narrow_channels``; opt-in, ``widen=True`` /
  ``--widen``, for CPUs with AVX-512 only). onnxruntime's NCHWc convolutions (MLAS) block
  channels by 16 with AVX-512 and by 8 with AVX2. An 8-channel tensor that feeds only depthwise
  and 1×1 convolutions (mini-Xception's second stem conv → block 1) is widened to 16 channels
  that are exactly zero: the producing conv gets zero filters and zero bias (ReLU keeps 0), a
  depthwise consumer gets zero filters for the new channels (its output is widened the same
  way), a 1×1 consumer gets zero weights for them. With AVX-512, MLAS computed the padded
  channels anyway; now the tensors stay in the blocked layout, so the NCHW↔NCHWc reorders
  around them and the slower "NCHW input" kernel of the 1×1 conv after the depthwise go away.
  With AVX2 (e.g. AMD Zen 2/3 EPYC Rome/Milan, many Intel server parts) 8 channels are already
  one block, so the widening doubles the work of those layers (about 30% of mini-Xception's
  multiply-adds) and is very likely slower: it is not applied by default. A tensor that feeds
  a dense k×k conv (the first stem conv's output) is never widened: its consumer would do
  twice the work.

Measured on the build machine (AMD EPYC, AVX-512, onnxruntime 1.32, one thread, ORT_ENABLE_ALL):
see models/README.md. Both rewrites are generic (they look at the graph, not at node names) and
idempotent; a graph without the patterns is returned unchanged.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BLOCK = 16  # MLAS NCHWc block size with AVX-512 (8 with AVX2, where widening to 16 costs work)


# ----------------------------------------------------------------------------- graph helpers


class _Graph:
    """Small index over a GraphProto: producers, consumers, initializers, unique names."""

    def __init__(self, graph: Any):
        from onnx import numpy_helper

        self.graph = graph
        self.inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.outputs = {o.name for o in graph.output}
        self.names = {n.name for n in graph.node} | set(self.inits)
        for n in graph.node:
            self.names.update(n.output)
        self.new_nodes: list[tuple[Any, Any]] = []  # (node to insert, before this node)

    def consumers(self, tensor: str) -> list[Any]:
        return [n for n in self.graph.node if tensor in n.input]

    def unique(self, base: str) -> str:
        name, i = base, 1
        while name in self.names:
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        return name

    def const(self, base: str, array: Any, before: Any) -> str:
        """A ``Constant`` node (not an initializer: the initializer set stays the original's)."""
        from onnx import helper, numpy_helper

        name = self.unique(base)
        node = helper.make_node(
            "Constant", [], [name], name=name, value=numpy_helper.from_array(array, name)
        )
        self.new_nodes.append((node, before))
        return name

    def add(self, node: Any, before: Any) -> None:
        self.new_nodes.append((node, before))

    def commit(self) -> None:
        """Insert the new nodes right before the node that first needs them (stays sorted)."""
        if not self.new_nodes:
            return
        # Anchored by the first output's name: unique in an SSA graph, unlike Python wrappers.
        pending: dict[str, list[Any]] = {}
        for node, before in self.new_nodes:
            pending.setdefault(before.output[0], []).append(node)
        out = []
        for n in self.graph.node:
            out.extend(pending.pop(n.output[0], []))
            out.append(n)
        if pending:  # pragma: no cover - every 'before' is a node of the graph
            raise RuntimeError("new node anchored to a node outside the graph")
        out = [_copy(n) for n in out]
        del self.graph.node[:]
        self.graph.node.extend(out)
        self.new_nodes = []


def _copy(node: Any) -> Any:
    from onnx import NodeProto

    new = NodeProto()
    new.CopyFrom(node)
    return new


def _attr(node: Any, name: str, default: Any = None) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _set_int_attr(node: Any, name: str, value: int) -> None:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            a.i = value
            return
    node.attribute.append(helper.make_attribute(name, value))


def _plain_conv(node: Any, g: _Graph) -> bool:
    """A float Conv with constant weight (and bias), no auto_pad, no dilation."""
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx"):
        return False
    if len(node.input) < 2 or node.input[1] not in g.inits:
        return False
    if len(node.input) > 2 and node.input[2] and node.input[2] not in g.inits:
        return False
    if _attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return False
    dil = _attr(node, "dilations")
    return dil is None or all(d == 1 for d in dil)


def _pad_input(g: _Graph, node: Any, index: int, axis: int, extra: int) -> None:
    """Replace ``node.input[index]`` (a constant) by Pad(it) with ``extra`` zeros after ``axis``."""
    import numpy as np
    from onnx import helper

    src = node.input[index]
    rank = g.inits[src].ndim if src in g.inits else 1
    pads = np.zeros(2 * rank, np.int64)
    pads[rank + axis] = extra
    pads_name = g.const(f"{src}.widen_pads", pads, node)
    out = g.unique(f"{src}.widened")
    g.add(helper.make_node("Pad", [src, pads_name], [out], name=out, mode="constant"), node)
    node.input[index] = out


# ----------------------------------------------------------------------------- rewrite 1


def _widen_plan(g: _Graph, tensor: str, channels: int) -> list[tuple[str, Any]] | None:
    """What widening ``tensor`` (``channels`` wide) needs from its consumers, or None if unsafe.

    Allowed consumers: Relu (its output is widened too), a depthwise conv (group == channels,
    one filter per channel: its output is widened too) and a 1×1 group-1 conv (gets zero
    weights for the new input channels). Anything else, or a graph output, refuses.
    """
    if tensor in g.outputs:
        return None
    users = g.consumers(tensor)
    if not users:
        return None
    plan: list[tuple[str, Any]] = []
    for n in users:
        if list(n.input).count(tensor) != 1:
            return None
        if n.op_type == "Relu" and n.domain in ("", "ai.onnx"):
            sub = _widen_plan(g, n.output[0], channels)
            if sub is None:
                return None
            plan += sub
        elif _plain_conv(n, g) and n.input[0] == tensor:
            w = g.inits[n.input[1]]
            group = _attr(n, "group", 1)
            if group == channels and w.shape[:2] == (channels, 1):
                sub = _widen_plan(g, n.output[0], channels)
                if sub is None:
                    return None
                plan += [("depthwise", n), *sub]
            elif group == 1 and w.shape[1] == channels and w.shape[2:] == (1, 1):
                plan.append(("pointwise_input", n))
            else:
                return None
        else:
            return None
    return plan


def _dense_convs(model: Any, g: _Graph) -> Iterator[tuple[Any, Any]]:
    """Each plain (not grouped) Conv of the graph, with its weight array; over a copy of the
    node list, so the caller may add or replace nodes meanwhile."""
    for node in list(model.graph.node):
        if _plain_conv(node, g) and _attr(node, "group", 1) == 1:
            yield node, g.inits[node.input[1]]


def widen_narrow_channels(model: Any, block: int = BLOCK) -> int:
    """Widen every conv output narrower than ``block`` that only feeds depthwise/1×1 convs.

    In place; returns how many tensors were widened.
    """
    g = _Graph(model.graph)
    done = 0
    for node, w in _dense_convs(model, g):
        channels = w.shape[0]
        if channels % block == 0 or channels > block or w.ndim != 4:
            continue
        plan = _widen_plan(g, node.output[0], channels)
        if plan is None:
            continue
        extra = block - channels
        _pad_input(g, node, 1, 0, extra)
        if len(node.input) > 2 and node.input[2]:  # without a bias the new channels are 0 too
            _pad_input(g, node, 2, 0, extra)
        for kind, n in plan:
            if kind == "depthwise":
                _pad_input(g, n, 1, 0, extra)
                _set_int_attr(n, "group", block)
            else:
                _pad_input(g, n, 1, 1, extra)
        done += 1
    g.commit()
    return done


# ----------------------------------------------------------------------------- rewrite 2


def _static_hw(model: Any, tensor: str) -> tuple[int, int] | None:
    """(H, W) of a 4-D tensor from onnx shape inference, if both are static."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        if vi.name == tensor:
            dims = vi.type.tensor_type.shape.dim
            if len(dims) == 4 and dims[2].HasField("dim_value") and dims[3].HasField("dim_value"):
                return dims[2].dim_value, dims[3].dim_value
    return None


def _pool_matrix(hw: tuple[int, int], kernel, strides, pads) -> Any:
    """M[t, u]: how often tap t of the kernel meets input position u, over all outputs / count."""
    import numpy as np

    (h, w), (kh, kw) = hw, kernel
    ho = (h + pads[0] + pads[2] - kh) // strides[0] + 1
    wo = (w + pads[1] + pads[3] - kw) // strides[1] + 1
    counts = np.zeros((kh, kw, h, w), np.int64)
    for y in range(ho):
        for x in range(wo):
            for i in range(kh):
                for j in range(kw):
                    u, v = y * strides[0] + i - pads[0], x * strides[1] + j - pads[1]
                    if 0 <= u < h and 0 <= v < w:
                        counts[i, j, u, v] += 1
    return (counts.reshape(kh * kw, h * w) / (ho * wo)).astype(np.float32)


def fold_conv_global_pool(model: Any) -> int:
    """Conv → GlobalAveragePool (its only consumer) becomes one conv over the whole input.

    In place; returns how many were folded.
    """
    import numpy as np
    from onnx import helper

    g = _Graph(model.graph)
    done = 0
    for node, w in _dense_convs(model, g):
        users = g.consumers(node.output[0])
        if w.ndim != 4 or node.output[0] in g.outputs or len(users) != 1:
            continue
        pool = users[0]
        if pool.op_type != "GlobalAveragePool" or pool.domain not in ("", "ai.onnx"):
            continue
        hw = _static_hw(model, node.input[0])
        if hw is None:
            continue
        kernel = tuple(w.shape[2:])
        strides = tuple(_attr(node, "strides", [1, 1]))
        pads = tuple(_attr(node, "pads", [0, 0, 0, 0]))
        m = _pool_matrix(hw, kernel, strides, pads)
        o, c = w.shape[:2]
        src = node.input[1]
        flat = g.const(f"{src}.flat_shape", np.array([o * c, kernel[0] * kernel[1]]), node)
        mat = g.const(f"{src}.pool_matrix", m, node)
        full = g.const(f"{src}.pooled_shape", np.array([o, c, hw[0], hw[1]]), node)
        names = [g.unique(f"{src}.{s}") for s in ("flat", "pooled_flat", "pooled")]
        g.add(helper.make_node("Reshape", [src, flat], [names[0]], name=names[0]), node)
        g.add(helper.make_node("MatMul", [names[0], mat], [names[1]], name=names[1]), node)
        g.add(helper.make_node("Reshape", [names[1], full], [names[2]], name=names[2]), node)
        conv = helper.make_node(
            "Conv",
            [node.input[0], names[2], *node.input[2:]],
            [pool.output[0]],
            name=node.name,
            kernel_shape=list(hw),
            strides=[1, 1],
            pads=[0, 0, 0, 0],
        )
        node.CopyFrom(conv)
        model.graph.node.remove(pool)
        done += 1
    g.commit()
    return done


# ----------------------------------------------------------------------------- entry points


def rewrite(model: Any, widen: bool = False, block: int = BLOCK) -> Any:
    """Return a rewritten copy of ``model`` (an onnx ModelProto); the argument is not changed.

    By default only the portable ``fold_conv_global_pool``; ``widen=True`` also zero-pads
    narrow tensors to ``block`` channels (``widen_narrow_channels``), which pays only on CPUs
    with AVX-512 and very likely costs time on AVX2-only CPUs (see the module docstring).
    """
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    # Fold the pool first: the widening then sees the final head (it leaves it alone anyway).
    n_fold = fold_conv_global_pool(out)
    n_wide = widen_narrow_channels(out, block) if widen else 0
    done = [f"{n_fold} conv+global-pool folded"] if n_fold else []
    if n_wide:
        done.append(f"{n_wide} narrow tensor(s) zero-padded to {block} channels (AVX-512)")
    if done:
        note = f" Rewritten by training.convert.fast_graph (exact): {', '.join(done)}."
        if note not in out.doc_string:
            out.doc_string += note
    onnx.checker.check_model(out, full_check=True)
    return out


def max_difference(a: Any, b: Any, inputs: Any) -> tuple[float, bool]:
    """(max |Δ| of the first output, top-1 identical) of two models on ``inputs`` (onnxruntime)."""
    import numpy as np
    import onnxruntime as ort

    def run(model: Any) -> Any:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 3
        sess = ort.InferenceSession(
            model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )
        return sess.run(None, {sess.get_inputs()[0].name: inputs})[0]

    ya, yb = run(a), run(b)
    same_top1 = ya.ndim != 2 or bool(np.array_equal(ya.argmax(1), yb.argmax(1)))
    return float(np.abs(ya - yb).max()), same_top1


def random_inputs(model: Any, batch: int = 16, seed: int = 0) -> Any:
    """Uniform [-1, 1] float32 inputs for the model's first input (symbolic dims → ``batch``)."""
    import numpy as np

    dims = model.graph.input[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else batch for d in dims]
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


WIDEN_HELP = (
    "also zero-pad 8-channel tensors to 16 channels (exact). Only for workers on CPUs with "
    "AVX-512 (check there: grep -c avx512f /proc/cpuinfo prints more than 0): onnxruntime's "
    "NCHWc convolutions block channels by 16 there, so the padded channels were computed anyway "
    "and the rewrite removes layout reorders (1.08x cheaper per face than without it on an "
    "AVX-512 EPYC). "
    "On AVX2-only CPUs (block 8, e.g. AMD EPYC Rome/Milan) it doubles the work of those layers "
    "and is very likely slower: leave it off there"
)


def main(argv: list[str] | None = None) -> None:
    import onnx

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", help="ONNX file to rewrite")
    ap.add_argument("out", help="where to write the rewritten file")
    ap.add_argument("--widen", action="store_true", help=WIDEN_HELP)
    ap.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    args = ap.parse_args(argv)
    model = onnx.load(args.src)
    new = rewrite(model, widen=args.widen)
    if not args.no_check:
        err, top1 = max_difference(model, new, random_inputs(model))
        print(f"max |Δ| {err:.3g} on random inputs, top-1 identical: {top1}")
        if err > 1e-5 or not top1:
            sys.exit(f"{args.src}: the rewrite changed the outputs; nothing written")
    data = new.SerializeToString()
    Path(args.out).write_bytes(data)
    from training.convert.common import sha256_bytes

    print(f"{args.out}: sha256 {sha256_bytes(data)}")


if __name__ == "__main__":
    main()
