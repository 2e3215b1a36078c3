"""A small zoo of generated non-NAS-Bench-201 ONNX models for ``compare --models``.

NAS-Bench-201 has plain 3x3/1x1 convolutions, pooling and skips only; these
models bring what real networks add, so the comparison shows what changes off
that space:

- ``mobilenet_*``: MobileNetV3-like inverted residual blocks (1x1 expand,
  3x3 depthwise, 1x1 project) with BatchNormalization and HardSwish;
- ``resnet_*``: ResNet-like bottleneck blocks (1x1, 3x3, 1x1, residual Add,
  strided 1x1 projection shortcut);
- ``attention_*``: a tiny vision transformer: patch embedding, multi-head
  self-attention built from MatMul + Reshape + Transpose + Softmax, LayerNorm,
  an MLP, ReduceMean and a classifier.

Weights are random (``seed``); opset 17; batch 1; static shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["ZOO", "build_model", "generate_models"]

OPSET = 17
PRODUCER = "costmodels.harness.models"  # the producer_name of every model it writes


class _Graph:
    """A tiny ONNX graph builder that tracks the shape of every value (NCHW, batch 1)."""

    def __init__(self, name: str, in_shape: tuple[int, ...], seed: int) -> None:
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.shape: dict[str, tuple[int, ...]] = {"input": in_shape}
        self.in_shape = in_shape
        self._n = 0

    def _id(self, op: str) -> str:
        self._n += 1
        return f"{op.lower()}_{self._n}"

    def const(self, array: np.ndarray, dtype=np.float32) -> str:
        from onnx import numpy_helper

        name = self._id("w")
        array = np.asarray(array, dtype=dtype)
        self.inits.append(numpy_helper.from_array(array, name))
        self.shape[name] = array.shape
        return name

    def weight(self, *shape: int, fan_in: int) -> str:
        return self.const(self.rng.normal(0, (2.0 / fan_in) ** 0.5, shape))

    def node(self, op: str, inputs: list[str], shape: tuple[int, ...], **attrs) -> str:
        from onnx import helper

        out = self._id(op)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        self.shape[out] = shape
        return out

    # -- layers ---------------------------------------------------------------------------
    def conv(self, x: str, cout: int, k: int = 1, s: int = 1, groups: int = 1) -> str:
        n, cin, h, w = self.shape[x]
        wt = self.weight(cout, cin // groups, k, k, fan_in=cin // groups * k * k)
        p = k // 2
        ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        return self.node("Conv", [x, wt], (n, cout, ho, wo), kernel_shape=[k, k],
                         strides=[s, s], pads=[p, p, p, p], group=groups)

    def bn(self, x: str) -> str:
        c = self.shape[x][1]
        params = [self.const(self.rng.uniform(0.5, 1.5, c)), self.const(self.rng.normal(0, .1, c)),
                  self.const(self.rng.normal(0, .1, c)), self.const(self.rng.uniform(.5, 1.5, c))]
        return self.node("BatchNormalization", [x, *params], self.shape[x], epsilon=1e-5)

    def act(self, x: str, op: str) -> str:
        return self.node(op, [x], self.shape[x]) if op else x

    def conv_bn(self, x: str, cout: int, k: int = 1, s: int = 1, groups: int = 1,
                act: str = "Relu") -> str:
        return self.act(self.bn(self.conv(x, cout, k, s, groups)), act)

    def add(self, a: str, b: str) -> str:
        return self.node("Add", [a, b], self.shape[a])

    def reshape(self, x: str, shape: tuple[int, ...]) -> str:
        return self.node("Reshape", [x, self.const(np.array(shape), np.int64)], shape)

    def transpose(self, x: str, perm: tuple[int, ...]) -> str:
        s = self.shape[x]
        return self.node("Transpose", [x], tuple(s[p] for p in perm), perm=list(perm))

    def matmul(self, a: str, b: str) -> str:
        sa, sb = self.shape[a], self.shape[b]
        return self.node("MatMul", [a, b], sa[:-1] + sb[-1:])

    def linear(self, x: str, dout: int) -> str:
        din = self.shape[x][-1]
        y = self.matmul(x, self.weight(din, dout, fan_in=din))
        return self.node("Add", [y, self.const(np.zeros(dout))], self.shape[y])

    def layernorm(self, x: str) -> str:
        d = self.shape[x][-1]
        return self.node("LayerNormalization", [x, self.const(np.ones(d)), self.const(np.zeros(d))],
                         self.shape[x], axis=-1, epsilon=1e-5)

    def classifier(self, x: str, classes: int) -> str:
        n, c = self.shape[x][:2]
        pooled = self.node("GlobalAveragePool", [x], (n, c, 1, 1))
        flat = self.node("Flatten", [pooled], (n, c), axis=1)
        return self.node("Gemm", [flat, self.weight(classes, c, fan_in=c),
                                  self.const(np.zeros(classes))], (n, classes), transB=1)

    def model(self, out: str):
        from onnx import TensorProto, checker, helper

        graph = helper.make_graph(
            self.nodes, self.name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(self.in_shape))],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, list(self.shape[out]))],
            initializer=self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name=PRODUCER)
        m.ir_version = 8
        checker.check_model(m)
        return m


# ----------------------------------------------------------------------------- families
def mobilenet(name: str, resolution: int = 96, width: float = 1.0, seed: int = 0,
              classes: int = 10):
    """MobileNetV3-like: stem, inverted residual blocks (expand, depthwise, project)."""
    def ch(c: int) -> int:
        return max(8, int(round(c * width / 8)) * 8)

    g = _Graph(name, (1, 3, resolution, resolution), seed)
    x = g.conv_bn("input", ch(16), 3, 2, act="HardSwish")
    # (expansion, out channels, stride, activation)
    for e, c, s, a in [(1, 16, 1, "Relu"), (4, 24, 2, "Relu"), (3, 24, 1, "Relu"),
                       (4, 40, 2, "HardSwish"), (3, 40, 1, "HardSwish"), (6, 80, 2, "HardSwish")]:
        cin, cout = g.shape[x][1], ch(c)
        y = g.conv_bn(x, cin * e, 1, act=a) if e != 1 else x
        y = g.conv_bn(y, g.shape[y][1], 3, s, groups=g.shape[y][1], act=a)
        y = g.conv_bn(y, cout, 1, act="")
        x = g.add(x, y) if s == 1 and cin == cout else y
    x = g.conv_bn(x, ch(160), 1, act="HardSwish")
    return g.model(g.classifier(x, classes))


def resnet(name: str, resolution: int = 64, width: int = 32, blocks: tuple[int, ...] = (1, 1, 1),
           seed: int = 0, classes: int = 10):
    """ResNet-like: stem, stages of bottleneck blocks (4x expansion) with projection shortcuts."""
    g = _Graph(name, (1, 3, resolution, resolution), seed)
    x = g.conv_bn("input", width, 3, 1)
    for stage, n in enumerate(blocks):
        mid = width * 2 ** stage
        for b in range(n):
            s = 2 if stage > 0 and b == 0 else 1
            y = g.conv_bn(x, mid, 1)
            y = g.conv_bn(y, mid, 3, s)
            y = g.conv_bn(y, mid * 4, 1, act="")
            short = x if s == 1 and g.shape[x][1] == mid * 4 else g.conv_bn(x, mid * 4, 1, s, act="")
            x = g.act(g.add(short, y), "Relu")
    return g.model(g.classifier(x, classes))


def attention(name: str, resolution: int = 32, patch: int = 4, dim: int = 64, heads: int = 4,
              depth: int = 2, seed: int = 0, classes: int = 10):
    """A tiny vision transformer: attention from MatMul/Reshape/Transpose/Softmax."""
    g = _Graph(name, (1, 3, resolution, resolution), seed)
    x = g.conv("input", dim, patch, patch)          # patch embedding: (1, dim, h, w)
    _, _, h, w = g.shape[x]
    t = h * w
    x = g.transpose(g.reshape(x, (1, dim, t)), (0, 2, 1))  # (1, tokens, dim)
    hd = dim // heads
    for _ in range(depth):
        y = g.layernorm(x)
        q, k, v = (g.transpose(g.reshape(g.linear(y, dim), (1, t, heads, hd)), (0, 2, 1, 3))
                   for _ in range(3))                                  # (1, heads, t, hd)
        scores = g.matmul(q, g.transpose(k, (0, 1, 3, 2)))            # (1, heads, t, t)
        scores = g.node("Mul", [scores, g.const(np.array(hd ** -0.5))], g.shape[scores])
        att = g.matmul(g.node("Softmax", [scores], g.shape[scores], axis=-1), v)
        att = g.reshape(g.transpose(att, (0, 2, 1, 3)), (1, t, dim))
        x = g.add(x, g.linear(att, dim))
        y = g.act(g.linear(g.layernorm(x), dim * 2), "Relu")
        x = g.add(x, g.linear(y, dim))
    pooled = g.node("ReduceMean", [g.layernorm(x)], (1, dim), axes=[1], keepdims=0)
    out = g.node("Gemm", [pooled, g.weight(classes, dim, fan_in=dim), g.const(np.zeros(classes))],
                 (1, classes), transB=1)
    return g.model(out)


#: name -> builder; a spread of families and sizes (a few ms each under ONNX Runtime)
ZOO: dict[str, Callable[[int], object]] = {
    "mobilenet_w050_r96": lambda s: mobilenet("mobilenet_w050_r96", 96, 0.5, s),
    "mobilenet_w100_r96": lambda s: mobilenet("mobilenet_w100_r96", 96, 1.0, s),
    "mobilenet_w100_r160": lambda s: mobilenet("mobilenet_w100_r160", 160, 1.0, s),
    "resnet_w16_r32": lambda s: resnet("resnet_w16_r32", 32, 16, (1, 1, 1), s),
    "resnet_w32_r64": lambda s: resnet("resnet_w32_r64", 64, 32, (1, 1, 1), s),
    "resnet_w32_r64_deep": lambda s: resnet("resnet_w32_r64_deep", 64, 32, (2, 2, 2), s),
    "attention_d64_t64": lambda s: attention("attention_d64_t64", 32, 4, 64, 4, 2, s),
    "attention_d128_t256": lambda s: attention("attention_d128_t256", 64, 4, 128, 4, 2, s),
}


def build_model(name: str, seed: int = 0):
    """One model of :data:`ZOO` as an ``onnx.ModelProto``."""
    if name not in ZOO:
        raise KeyError(f"no generated model {name!r}; choose from {', '.join(ZOO)}")
    return ZOO[name](seed)


def generate_models(out_dir: str | Path, names: list[str] | None = None, seed: int = 0
                    ) -> list[Path]:
    """Write the zoo (or ``names`` of it) as ``OUT_DIR/NAME.onnx``; returns the paths."""
    from costmodels.tables import atomic_output

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names or list(ZOO):
        path = out / f"{name}.onnx"
        with atomic_output(path, "wb") as fh:
            fh.write(build_model(name, seed).SerializeToString())
        paths.append(path)
    return paths
