"""The emotion CNNs, selectable by name. All take normalised grey NCHW input, return logits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

NUM_CLASSES = 7
# Keras' batch-norm epsilon: the shipped mini-Xception was trained (and folded) with it.
BN_EPS = 1e-3
SHIPPED_ONNX = Path(__file__).resolve().parents[1] / "models" / "emotion_mini_xception.onnx"


def tf_same_max_pool(x: torch.Tensor) -> torch.Tensor:
    """Max-pool 3×3 stride 2 with TensorFlow's "same" padding.

    TF pads stride-2 "same" ops asymmetrically: on an even size the one extra row/column goes
    at the bottom/right, on an odd size one goes each side. A symmetric pad shifts the windows
    and the shipped weights give other outputs. ceil_mode reproduces the bottom/right case
    and padding=1 the odd case, in one ONNX MaxPool without a Pad node. int(): only the batch
    axis is dynamic in the export; H and W are fixed per architecture.
    """
    h, w = int(x.shape[-2]), int(x.shape[-1])
    return F.max_pool2d(x, 3, stride=2, padding=(h % 2, w % 2), ceil_mode=True)


def _head_init(layer: nn.Module) -> None:
    # Near-zero logits at init make the initial loss ln 7 (the papers' sanity check).
    nn.init.normal_(layer.weight, std=1e-3)
    nn.init.zeros_(layer.bias)


class SeparableConv(nn.Module):
    """Keras SeparableConv2D (3×3 same, no bias): depthwise then pointwise 1×1, then BN."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.pointwise(self.depthwise(x)))


class XceptionBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.sep1 = SeparableConv(cin, cout)
        self.sep2 = SeparableConv(cout, cout)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=2, bias=False)
        self.shortcut_bn = nn.BatchNorm2d(cout, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.sep2(F.relu(self.sep1(x)))
        # A 1×1 stride-2 "same" conv needs no padding at any size, unlike the pool.
        return tf_same_max_pool(y) + self.shortcut_bn(self.shortcut(x))


class MiniXception(nn.Module):
    """Arriaga et al. 2017, the shipped model: module names match its ONNX initializers."""

    input_size = 64

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8, eps=BN_EPS)
        self.conv2 = nn.Conv2d(8, 8, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(8, eps=BN_EPS)
        widths = [8, 16, 32, 64, 128]
        for i in range(1, 5):
            self.add_module(f"block{i}", XceptionBlock(widths[i - 1], widths[i]))
        self.head = nn.Conv2d(128, num_classes, 3, padding=1)
        _head_init(self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        x = self.block4(self.block3(self.block2(self.block1(x))))
        return self.head(x).mean(dim=(2, 3))

    def folded_pairs(self) -> dict[str, str]:
        """Shipped (BN-folded) conv name → the BN module that carries its folded bias."""
        pairs = {"conv1": "bn1", "conv2": "bn2"}
        for i in range(1, 5):
            pairs |= {f"block{i}.sep{j}.pointwise": f"block{i}.sep{j}.bn" for j in (1, 2)}
            pairs[f"block{i}.shortcut"] = f"block{i}.shortcut_bn"
        return pairs


def _conv_block(cin: int, cout: int, k: int, p: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Dropout(p),
    )


def _dense(cin: int, cout: int, p: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(cin, cout, bias=False), nn.BatchNorm1d(cout), nn.ReLU(inplace=True), nn.Dropout(p)
    )


class DeepCNN(nn.Sequential):
    """The founding papers' deep CNN: conv 64 3×3, 128 5×5, 512 3×3, 512 3×3; dense 256, 512."""

    input_size = 48

    def __init__(self, num_classes: int = NUM_CLASSES, p: float = 0.25):
        side = self.input_size // 16
        super().__init__(
            _conv_block(1, 64, 3, p),
            _conv_block(64, 128, 5, p),
            _conv_block(128, 512, 3, p),
            _conv_block(512, 512, 3, p),
            nn.Flatten(),
            _dense(512 * side * side, 256, p),
            _dense(256, 512, p),
            nn.Linear(512, num_classes),
        )
        _head_init(self[-1])


class SimpleCNN(nn.Sequential):
    """The founding papers' simple CNN: three conv + max-pool + dropout groups, dense 128."""

    input_size = 48

    def __init__(self, num_classes: int = NUM_CLASSES, p: float = 0.25):
        side = self.input_size // 8
        groups = [
            nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
                nn.Dropout(p),
            )
            for cin, cout in ((1, 32), (32, 64), (64, 128))
        ]
        super().__init__(
            *groups,
            nn.Flatten(),
            nn.Linear(128 * side * side, 128),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(128, num_classes),
        )
        _head_init(self[-1])


ARCHS: dict[str, Callable[..., nn.Module]] = {
    "mini_xception": MiniXception,
    "deep_cnn": DeepCNN,
    "simple_cnn": SimpleCNN,
}


def build(name: str, num_classes: int = NUM_CLASSES) -> nn.Module:
    if name not in ARCHS:
        raise ValueError(f"unknown architecture {name!r}; choose from {', '.join(ARCHS)}")
    return ARCHS[name](num_classes)


def input_size(name: str) -> int:
    if name not in ARCHS:
        build(name)  # raises the same message
    return ARCHS[name].input_size  # type: ignore[attr-defined]


@torch.no_grad()
def load_shipped(model: MiniXception, onnx_path: str | Path = SHIPPED_ONNX) -> None:
    """Initialise from the shipped ONNX, whose batch norms are folded into conv weight + bias.

    Each BN becomes an exact identity plus the folded bias (γ=1, μ=0, σ²=1-ε), so fine-tuning
    starts from the shipped outputs and the BNs are free to learn again.
    """
    import onnx
    from onnx import numpy_helper

    path = Path(onnx_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: shipped model not found (see models/)")
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    pairs, modules = model.folded_pairs(), dict(model.named_modules())
    params = {
        n: p for n, p in model.named_parameters() if n.rsplit(".", 1)[0] not in pairs.values()
    }  # the BNs have no shipped counterpart
    targets = params | {f"{conv}.bias": modules[bn].bias for conv, bn in pairs.items()}
    for key, target in targets.items():
        if key not in weights:
            raise ValueError(f"{path}: initializer {key} missing; is this the shipped model?")
        if tuple(weights[key].shape) != tuple(target.shape):
            raise ValueError(
                f"{path}: {key} has shape {weights[key].shape}, want {tuple(target.shape)}"
            )
        target.copy_(torch.from_numpy(weights[key].copy()))  # onnx arrays are read-only
    for bn_name in pairs.values():
        bn = modules[bn_name]
        bn.weight.fill_(1.0)
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, inputs: torch.Tensor, batch: int = 256) -> None:
    """Turn identity BNs (freshly loaded folded weights) into ones that fit the data's statistics.

    With γ = √(σ²+ε), β = b + μ and running stats (μ, σ²) the eval-mode function is unchanged,
    while in train mode the batch statistics no longer renormalise every channel away from
    the shipped outputs.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    sums = {bn: torch.zeros(3, bn.num_features, dtype=torch.float64) for bn in bns}

    def accumulate(bn, args, _output):
        z = args[0].transpose(0, 1).flatten(1).double()
        sums[bn] += torch.stack([torch.full_like(z[:, 0], z.shape[1]), z.sum(1), (z * z).sum(1)])

    hooks = [bn.register_forward_hook(accumulate) for bn in bns]
    model.eval()
    for i in range(0, len(inputs), batch):  # normalised N×1×H×W
        model(inputs[i : i + batch])
    for h in hooks:
        h.remove()
    for bn in bns:
        n, s, sq = sums[bn]
        mean, var = s / n, (sq / n - (s / n) ** 2).clamp_min(0)
        bn.bias.add_((mean - bn.running_mean.double()).float())  # identity BN: z - shift + β
        bn.weight.copy_(torch.sqrt(var + bn.eps))
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
