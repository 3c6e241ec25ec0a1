"""training.convert.fast_graph: the exact rewrite of the converted classifier graph.

A small random-weight graph with the same patterns (8-channel stem feeding a depthwise and a
1×1 shortcut, head conv + global average pool) and the committed mini-Xception, compared with
a plain graph built here independently from its initializers (what the converter wrote before
the rewrite), must give the same outputs to 1e-5 with identical top-1, with the portable
rewrite (the default: head fold only, narrow channels left alone) and with ``widen=True`` (the
AVX-512 opt-in). The committed file is the portable rewrite of the plain graph.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from training.convert import fast_graph  # noqa: E402
from training.convert.fer_mini_xception import tf_same_pads  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MINI = ROOT / "models" / "emotion_mini_xception.onnx"
REF = ROOT / "tests" / "data" / "reference" / "mini_xception_keras.npz"


def _run(model, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def _assert_same(a, b, x: np.ndarray) -> None:
    ya, yb = _run(a, x), _run(b, x)
    assert ya.shape == yb.shape
    err = float(np.abs(ya - yb).max())
    assert err <= 1e-5, f"max |dp| {err:.3g}"
    assert np.array_equal(ya.argmax(1), yb.argmax(1))


def _plain_model(weights: dict[str, np.ndarray], nodes: list, size: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "plain",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", size, size, 1])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 7])],
        initializer=[numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (("classpulse.kind", "emotion_classifier"), ("classpulse.note", "kept")):
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    return model


def _block(prefix: str, x: str, cin: int, cout: int, pool_pads: list[int]) -> tuple[list, str]:
    conv = helper.make_node
    return [
        conv("Conv", [x, f"{prefix}.sep1.depthwise.weight"], [f"{prefix}.d1"], group=cin,
             kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        conv("Conv", [f"{prefix}.d1", f"{prefix}.sep1.pointwise.weight",
                      f"{prefix}.sep1.pointwise.bias"], [f"{prefix}.p1"], kernel_shape=[1, 1]),
        conv("Relu", [f"{prefix}.p1"], [f"{prefix}.r1"]),
        conv("Conv", [f"{prefix}.r1", f"{prefix}.sep2.depthwise.weight"], [f"{prefix}.d2"],
             group=cout, kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        conv("Conv", [f"{prefix}.d2", f"{prefix}.sep2.pointwise.weight",
                      f"{prefix}.sep2.pointwise.bias"], [f"{prefix}.p2"], kernel_shape=[1, 1]),
        conv("MaxPool", [f"{prefix}.p2"], [f"{prefix}.mp"], kernel_shape=[3, 3], strides=[2, 2],
             pads=pool_pads),
        conv("Conv", [x, f"{prefix}.shortcut.weight", f"{prefix}.shortcut.bias"],
             [f"{prefix}.sc"], kernel_shape=[1, 1], strides=[2, 2]),
        conv("Add", [f"{prefix}.mp", f"{prefix}.sc"], [f"{prefix}.out"]),
    ], f"{prefix}.out"  # fmt: skip


def _mini_xception_nodes(weights: dict[str, np.ndarray], size: int, blocks: int) -> list:
    """The plain graph of fer_mini_xception.build_model, written out independently."""
    conv = helper.make_node
    nodes = [
        conv("Transpose", ["input"], ["x0"], perm=[0, 3, 1, 2]),
        conv("Conv", ["x0", "conv1.weight", "conv1.bias"], ["c1"], kernel_shape=[3, 3]),
        conv("Relu", ["c1"], ["r1"]),
        conv("Conv", ["r1", "conv2.weight", "conv2.bias"], ["c2"], kernel_shape=[3, 3]),
        conv("Relu", ["c2"], ["r2"]),
    ]
    x, hw = "r2", size - 4
    for i in range(1, blocks + 1):
        before, after = tf_same_pads(hw, 3, 2)
        cin = weights[f"block{i}.sep1.depthwise.weight"].shape[0]
        cout = weights[f"block{i}.sep2.depthwise.weight"].shape[0]
        block, x = _block(f"block{i}", x, cin, cout, [before, before, after, after])
        nodes += block
        hw = -(-hw // 2)
    nodes += [
        conv("Conv", [x, "head.weight", "head.bias"], ["h"], kernel_shape=[3, 3], pads=[1] * 4),
        conv("GlobalAveragePool", ["h"], ["gap"]),
        conv("Flatten", ["gap"], ["flat"], axis=1),
        conv("Softmax", ["flat"], ["probs"], axis=1),
    ]
    return nodes


def _random_weights(rng: np.random.Generator) -> dict[str, np.ndarray]:
    def w(*shape: int) -> np.ndarray:
        return rng.normal(0, 0.5, shape).astype(np.float32)

    return {
        "conv1.weight": w(8, 1, 3, 3), "conv1.bias": w(8),
        "conv2.weight": w(8, 8, 3, 3), "conv2.bias": w(8),
        "block1.sep1.depthwise.weight": w(8, 1, 3, 3),
        "block1.sep1.pointwise.weight": w(16, 8, 1, 1), "block1.sep1.pointwise.bias": w(16),
        "block1.sep2.depthwise.weight": w(16, 1, 3, 3),
        "block1.sep2.pointwise.weight": w(16, 16, 1, 1), "block1.sep2.pointwise.bias": w(16),
        "block1.shortcut.weight": w(16, 8, 1, 1), "block1.shortcut.bias": w(16),
        "head.weight": w(7, 16, 3, 3), "head.bias": w(7),
    }  # fmt: skip


def _check_kept(before: onnx.ModelProto, after: onnx.ModelProto) -> None:
    assert [(t.name, t.raw_data) for t in after.graph.initializer] == [
        (t.name, t.raw_data) for t in before.graph.initializer
    ]
    assert list(after.metadata_props) == list(before.metadata_props)
    assert list(after.graph.input) == list(before.graph.input)
    assert list(after.graph.output) == list(before.graph.output)
    assert list(after.opset_import) == list(before.opset_import)


def _by_output(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {n.output[0]: n for n in model.graph.node}


@pytest.mark.parametrize("widen", [False, True])
def test_random_weight_graph_is_rewritten_exactly(tmp_path, widen):
    rng = np.random.default_rng(7)
    weights = _random_weights(rng)
    model = _plain_model(weights, _mini_xception_nodes(weights, 18, blocks=1), 18)
    original = model.SerializeToString()
    new = fast_graph.rewrite(model, widen=widen)
    assert model.SerializeToString() == original  # the argument is not modified
    _check_kept(model, new)
    ops = [n.op_type for n in new.graph.node]
    assert "GlobalAveragePool" not in ops  # the head fold: always
    before, after = _by_output(model), _by_output(new)
    assert after["c1"].input[1] == "conv1.weight"  # conv1 feeds a dense 3×3: never widened
    if widen:  # conv2 feeds depthwise + 1×1: widened to 16 channels, the depthwise too
        assert "Pad" in ops
        assert after["c2"].input[1] != "conv2.weight"
        assert fast_graph._attr(after["block1.d1"], "group") == 16
    else:  # the default leaves every narrow tensor, and all but the head, as it was
        assert "Pad" not in ops
        for out in ("c1", "c2", "block1.d1", "block1.p1", "block1.sc"):
            assert after[out] == before[out]
    for batch in (1, 5):
        _assert_same(model, new, rng.uniform(-1, 1, (batch, 18, 18, 1)).astype(np.float32))
    # idempotent; the default rewrite of a widened graph changes nothing either
    assert fast_graph.rewrite(new, widen=widen).SerializeToString() == new.SerializeToString()
    assert fast_graph.rewrite(new).SerializeToString() == new.SerializeToString()
    src, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    src.write_bytes(original)
    fast_graph.main([str(src), str(out), *(["--widen"] if widen else [])])
    assert out.read_bytes() == new.SerializeToString()


def test_widening_a_portable_graph_equals_widening_the_plain_one():
    """What an operator does (``--widen`` on the committed file) gives the same graph."""
    weights = _random_weights(np.random.default_rng(5))
    model = _plain_model(weights, _mini_xception_nodes(weights, 18, blocks=1), 18)
    both = fast_graph.rewrite(model, widen=True)
    later = fast_graph.rewrite(fast_graph.rewrite(model), widen=True)
    assert list(later.graph.node) == list(both.graph.node)
    _check_kept(model, later)


@pytest.mark.parametrize("widen", [False, True])
def test_graph_without_the_patterns_is_unchanged(widen):
    rng = np.random.default_rng(3)
    weights = {"w": rng.normal(size=(16, 1, 3, 3)).astype(np.float32)}
    nodes = [
        helper.make_node("Transpose", ["input"], ["x"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3]),  # already 16 wide
        helper.make_node("GlobalMaxPool", ["c"], ["g"]),  # not an average: no fold
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Slice", ["f", "s0", "s1", "ax"], ["probs"]),
    ]
    weights |= {k: np.array(v, np.int64) for k, v in (("s0", [0]), ("s1", [7]), ("ax", [1]))}
    model = _plain_model(weights, nodes, 8)
    new = fast_graph.rewrite(model, widen=widen)
    assert new.SerializeToString() == model.SerializeToString()


_DEFAULTS = {"strides": 1, "pads": 0, "dilations": 1, "group": 1, "ceil_mode": 0}


def _dag_digest(model: onnx.ModelProto) -> str:
    """A digest of what the graph computes, blind to node and intermediate tensor names.

    Each tensor is named by its producer's op, attributes (defaults dropped, constants by
    value) and the digests of its inputs; initializers and graph inputs by their own names.
    """
    producer = {o: (n, i) for n in model.graph.node for i, o in enumerate(n.output)}
    leaves = {t.name for t in model.graph.initializer} | {i.name for i in model.graph.input}
    memo: dict[str, str] = {}

    def attr(a: onnx.AttributeProto) -> str:
        value = helper.get_attribute_value(a)
        if isinstance(value, onnx.TensorProto):
            array = numpy_helper.to_array(value)
            return f"{a.name}={array.dtype}{array.shape}{array.tobytes().hex()}"
        if a.name in _DEFAULTS and all(v == _DEFAULTS[a.name] for v in np.ravel(value)):
            return ""
        return f"{a.name}={value!r}"

    def digest(tensor: str) -> str:
        if tensor in leaves:
            return tensor
        if tensor not in memo:
            node, index = producer[tensor]
            attrs = sorted(filter(None, map(attr, node.attribute)))
            text = repr((node.op_type, node.domain, attrs, [digest(t) for t in node.input], index))
            memo[tensor] = hashlib.sha256(text.encode()).hexdigest()
        return memo[tensor]

    return digest(model.graph.output[0].name)


def test_committed_mini_xception_is_the_portable_rewrite_of_the_plain_graph():
    committed = onnx.load(str(MINI))
    weights = {t.name: numpy_helper.to_array(t) for t in committed.graph.initializer}
    plain = _plain_model(weights, _mini_xception_nodes(weights, 64, blocks=4), 64)
    portable = fast_graph.rewrite(plain)
    # The same computation as the portable rewrite of the plain graph, node for node: the head
    # folded, the 8-channel stem not widened (that is the AVX-512 opt-in, not shipped).
    assert _dag_digest(committed) == _dag_digest(portable)
    assert _dag_digest(committed) != _dag_digest(fast_graph.rewrite(plain, widen=True))
    assert "Pad" not in [n.op_type for n in committed.graph.node]
    assert "conv2.weight" in [i for n in committed.graph.node for i in n.input]
    # The committed file is the default rewrite's fixed point: the converter's output, rewritten.
    assert fast_graph.rewrite(committed).SerializeToString() == MINI.read_bytes()
    ref = np.load(REF)
    real = ((ref["inputs"].astype(np.float32) - 127.5) / 127.5)[..., None]
    rand = np.random.default_rng(11).uniform(-1, 1, (48, 64, 64, 1)).astype(np.float32)
    widened = fast_graph.rewrite(committed, widen=True)
    _check_kept(committed, widened)
    for x in (real, rand):
        _assert_same(plain, committed, x)
        _assert_same(plain, widened, x)  # the opt-in, applied as an operator would
