"""Small PyTorch models for the test zoo, with MAC counts taken from the torch modules.

Plain torch (torchvision does not import here). Channels are small so each ONNX
file stays well under 1 MB. :func:`torch_macs` counts MACs independently of
costmodels: forward hooks on ``nn.Conv2d``/``nn.Linear`` read the real output
shapes (``out.numel() * in_channels / groups * kh * kw``; ``out.numel() *
in_features``), and modules with matrix products outside those layers add them by
the textbook formula (``extra_macs``); recurrent layers (``nn.LSTM``/``nn.GRU``/``nn.RNN``)
count their gates' input and recurrent products per time step from the module's sizes.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def conv_bn(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.a = conv_bn(cin, cout, 3, stride)
        self.b = conv_bn(cout, cout, 3, 1)
        self.down = conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.b(F.relu(self.a(x)))
        return F.relu(y + (self.down(x) if self.down is not None else x))


class ResNetish(nn.Module):
    """Stem, three stages of basic blocks, global pool, flatten, linear head."""

    input_shape = (1, 3, 32, 32)

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 8, 3, 1)
        self.blocks = nn.Sequential(BasicBlock(8, 8, 1), BasicBlock(8, 16, 2),
                                    BasicBlock(16, 32, 2))
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.relu(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.body = nn.Sequential(conv_bn(cin, mid, 1), nn.ReLU6(),
                                  conv_bn(mid, mid, 3, stride, groups=mid), nn.ReLU6(),
                                  conv_bn(mid, cout, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.use_res else y


class MobileNetV2ish(nn.Module):
    """Depthwise-separable inverted residuals with ReLU6 (Clip) and a hardswish head."""

    input_shape = (1, 3, 32, 32)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 8, 3, 2), nn.ReLU6())
        self.blocks = nn.Sequential(InvertedResidual(8, 8, 1, 2), InvertedResidual(8, 16, 2, 3),
                                    InvertedResidual(16, 16, 1, 3))
        self.head = nn.Sequential(nn.Conv2d(16, 32, 1), nn.Hardswish())
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(x.mean((2, 3)))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous()
    return x.view(b, -1, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        half = c // 2
        self.branch = nn.Sequential(conv_bn(half, half, 1), nn.ReLU(),
                                    conv_bn(half, half, 3, groups=half),
                                    conv_bn(half, half, 1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat((a, self.branch(b)), 1), 2)


class ShuffleNetish(nn.Module):
    """Channel split, grouped 1x1 conv, shuffle through sizes read at run time."""

    input_shape = (1, 3, 32, 32)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 16, 3, 2), nn.ReLU())
        self.g = nn.Conv2d(16, 16, 1, groups=4)
        self.units = nn.Sequential(ShuffleUnit(16), ShuffleUnit(16))
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = channel_shuffle(self.g(self.stem(x)), 4)
        x = self.units(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).reshape(x.size(0), -1))


class Attention(nn.Module):
    """Multi-head self-attention; scores with einsum, context with matmul."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.dh = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.dh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        s = torch.einsum("bhqd,bhkd->bhqk", q, k) * self.dh ** -0.5
        if mask is not None:
            s = s + mask
        ctx = torch.matmul(s.softmax(-1), v)
        return self.proj(ctx.transpose(1, 2).reshape(b, n, d))

    @staticmethod
    def matmul_macs(b: int, heads: int, n: int, dh: int) -> int:
        """q.k^T and attn.v: two (n x dh) by (dh x n) products per head."""
        return 2 * b * heads * n * n * dh


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.n1(x), mask)
        return x + self.mlp(self.n2(x))


class ViTish(nn.Module):
    """Patch embedding, class token, position embedding, two blocks, LayerNorm, head."""

    input_shape = (1, 3, 32, 32)
    dim, heads, patch, depth = 32, 2, 8, 2

    def __init__(self) -> None:
        super().__init__()
        n = (32 // self.patch) ** 2
        self.embed = nn.Conv2d(3, self.dim, self.patch, self.patch)
        self.cls = nn.Parameter(torch.randn(1, 1, self.dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, n + 1, self.dim) * 0.02)
        self.blocks = nn.ModuleList(TransformerBlock(self.dim, self.heads)
                                    for _ in range(self.depth))
        self.norm = nn.LayerNorm(self.dim)
        self.head = nn.Linear(self.dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls.expand(x.shape[0], -1, -1), x), 1) + self.pos
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x)[:, 0])

    def extra_macs(self, x: torch.Tensor) -> int:
        n = (x.shape[2] // self.patch) * (x.shape[3] // self.patch) + 1
        return self.depth * Attention.matmul_macs(x.shape[0], self.heads, n, self.dim // self.heads)


class SwinMaskish(nn.Module):
    """Window attention with a shifted-window mask built at run time (Mod, Equal, Where,
    Expand), as Swin computes it from the feature-map size."""

    input_shape = (1, 3, 16, 16)
    dim, heads, patch, window = 16, 2, 4, 2

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, self.dim, self.patch, self.patch)
        self.block = TransformerBlock(self.dim, self.heads)
        self.head = nn.Linear(self.dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)                       # b, h*w, c
        idx = torch.arange(h * w, device=x.device)
        region = (idx // w // self.window) * 31 + (idx % w + 1) % (w // self.window + 1)
        same = region.unsqueeze(0) == region.unsqueeze(1)       # Equal
        mask = torch.where(same, torch.zeros((), dtype=x.dtype),
                           torch.full((), -100.0, dtype=x.dtype))
        mask = mask.expand(b, self.heads, h * w, h * w)          # Expand
        t = self.block(t, mask)
        return self.head(t.mean(1))

    def extra_macs(self, x: torch.Tensor) -> int:
        n = (x.shape[2] // self.patch) * (x.shape[3] // self.patch)
        return Attention.matmul_macs(x.shape[0], self.heads, n, self.dim // self.heads)


class SharedWeights(nn.Module):
    """The same Linear applied twice (one initializer, two MatMul/Gemm readers)."""

    input_shape = (2, 16)

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 16)
        self.out = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.fc(torch.relu(self.fc(x)))))


class Recurrentish(nn.Module):
    """A 2-layer bidirectional LSTM, a GRU over its output (both batch-first), a Linear head
    on the last step."""

    input_shape = (1, 12, 16)

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(16, 24, num_layers=2, bidirectional=True, batch_first=True)
        self.gru = nn.GRU(48, 16, batch_first=True)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(x)
        z, _ = self.gru(y)
        return self.head(z[:, -1])


def _rnn_macs(mod: nn.RNNBase, x: torch.Tensor) -> int:
    """Per time step and batch row, each layer and direction: gates x hidden x (its input
    width + hidden), from the module's own sizes (LSTM 4 gates, GRU 3, Elman RNN 1)."""
    steps = x.shape[0] * x.shape[1] if x.dim() == 3 else x.shape[0]
    gates = {"LSTM": 4, "GRU": 3}.get(mod.mode, 1)
    dirs = 2 if mod.bidirectional else 1
    h = mod.hidden_size
    per_step = sum(dirs * gates * h * ((mod.input_size if layer == 0 else dirs * h) + h)
                   for layer in range(mod.num_layers))
    return steps * per_step


def torch_macs(model: nn.Module, x: torch.Tensor) -> int:
    """MACs of ``model(x)`` from torch's own layer shapes (independent of costmodels)."""
    total = [0]

    def hook(mod: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        if isinstance(mod, nn.Conv2d):
            kh, kw = mod.kernel_size
            total[0] += out.numel() * (mod.in_channels // mod.groups) * kh * kw
        elif isinstance(mod, nn.Linear):
            total[0] += out.numel() * mod.in_features
        elif isinstance(mod, nn.RNNBase):
            total[0] += _rnn_macs(mod, inputs[0])

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear, nn.RNNBase))]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    extra = getattr(model, "extra_macs", None)
    return total[0] + (int(extra(x)) if extra else 0)


def torch_params(model: nn.Module, distinct_values: bool = False) -> int:
    """Learnable parameters (torch's count).

    ``distinct_values``: count parameters with identical contents once, as
    ``torch.onnx`` stores them (it shares identical initializers, e.g. the ones and
    zeros of untrained LayerNorms, between layers).
    """
    if not distinct_values:
        return sum(p.numel() for p in model.parameters())
    seen = {(str(p.dtype), tuple(p.shape), p.detach().numpy().tobytes())
            for p in model.parameters()}
    return sum(math.prod(shape) for _, shape, _ in seen)
