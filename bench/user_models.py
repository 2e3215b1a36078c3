"""A folder of "user" models at real sizes (1-15 GFLOP), exported the way users export them.

Nothing is downloaded: the architectures are written here in plain torch (the
registry's torchvision wheel does not import beside CPU torch) after the
torchvision definitions, with random weights, and exported by ``torch.onnx``
(TorchScript exporter, several opsets, some with dynamic axes), plus two
``onnx.helper`` graphs from :mod:`costmodels.harness.models`. Used by the README's
"bring your own models" walk-through and ``bench/bench_models.py``::

    python bench/user_models.py OUT_DIR        # writes OUT_DIR/*.onnx

GFLOP here = 2 x MACs at batch 1 (224x224 unless the name says r320) (the torchvision figures: ResNet-18 1.8 GMAC,
ResNet-50 4.1 GMAC, MobileNetV2 0.3 GMAC, ViT-S/16 4.6 GMAC, VGG-11 7.6 GMAC; here
VGG-11's classifier is a global-pool head).
"""

from __future__ import annotations

import sys
from pathlib import Path


def _torch_models():  # noqa: C901 - one place for every definition
    import torch
    from torch import nn

    def conv_bn(cin, cout, k=3, s=1, g=1, act=nn.ReLU):
        layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(cout)]
        if act is not None:
            layers.append(act(inplace=True) if act in (nn.ReLU, nn.ReLU6, nn.Hardswish) else act())
        return nn.Sequential(*layers)

    class Basic(nn.Module):
        expansion = 1

        def __init__(self, cin, c, s):
            super().__init__()
            self.a = conv_bn(cin, c, 3, s)
            self.b = conv_bn(c, c, 3, 1, act=None)
            self.down = (conv_bn(cin, c, 1, s, act=None) if s != 1 or cin != c else nn.Identity())

        def forward(self, x):
            return torch.relu(self.b(self.a(x)) + self.down(x))

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, cin, c, s):
            super().__init__()
            self.a = conv_bn(cin, c, 1)
            self.b = conv_bn(c, c, 3, s)
            self.c = conv_bn(c, 4 * c, 1, act=None)
            self.down = (conv_bn(cin, 4 * c, 1, s, act=None) if s != 1 or cin != 4 * c
                         else nn.Identity())

        def forward(self, x):
            return torch.relu(self.c(self.b(self.a(x))) + self.down(x))

    class ResNet(nn.Module):
        def __init__(self, block, layers, classes=1000):
            super().__init__()
            self.stem = nn.Sequential(conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1))
            blocks, cin = [], 64
            for i, n in enumerate(layers):
                c = 64 * 2 ** i
                for j in range(n):
                    blocks.append(block(cin, c, 2 if (j == 0 and i > 0) else 1))
                    cin = c * block.expansion
            self.body = nn.Sequential(*blocks)
            self.fc = nn.Linear(cin, classes)

        def forward(self, x):
            x = self.body(self.stem(x))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    class InvRes(nn.Module):
        def __init__(self, cin, cout, s, e, k=3, act=nn.ReLU6, se=False):
            super().__init__()
            mid = cin * e
            layers = [conv_bn(cin, mid, 1, act=act)] if e != 1 else []
            layers.append(conv_bn(mid, mid, k, s, g=mid, act=act))
            self.se = (nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(mid, max(8, cin // 4), 1),
                                     nn.SiLU(), nn.Conv2d(max(8, cin // 4), mid, 1), nn.Sigmoid())
                       if se else None)
            self.body = nn.Sequential(*layers)
            self.proj = conv_bn(mid, cout, 1, act=None)
            self.res = s == 1 and cin == cout

        def forward(self, x):
            y = self.body(x)
            if self.se is not None:
                y = y * self.se(y)
            y = self.proj(y)
            return x + y if self.res else y

    def mobilenet_v2(width=1.0):
        cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
               (6, 160, 3, 2), (6, 320, 1, 1)]
        cin = int(32 * width)
        layers = [conv_bn(3, cin, 3, 2, act=nn.ReLU6)]
        for e, c, n, s in cfg:
            for j in range(n):
                layers.append(InvRes(cin, int(c * width), s if j == 0 else 1, e))
                cin = int(c * width)
        layers += [conv_bn(cin, 1280, 1, act=nn.ReLU6), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                   nn.Linear(1280, 1000)]
        return nn.Sequential(*layers)

    def efficientnet_b0():
        cfg = [(1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3),
               (6, 112, 3, 1, 5), (6, 192, 4, 2, 5), (6, 320, 1, 1, 3)]
        cin = 32
        layers = [conv_bn(3, 32, 3, 2, act=nn.SiLU)]
        for e, c, n, s, k in cfg:
            for j in range(n):
                layers.append(InvRes(cin, c, s if j == 0 else 1, e, k, nn.SiLU, se=True))
                cin = c
        layers += [conv_bn(cin, 1280, 1, act=nn.SiLU), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                   nn.Linear(1280, 1000)]
        return nn.Sequential(*layers)

    class Shuffle(nn.Module):
        def __init__(self, cin, cout, s):
            super().__init__()
            self.s = s
            half = cout // 2
            if s > 1:
                self.left = nn.Sequential(conv_bn(cin, cin, 3, s, g=cin, act=None),
                                          conv_bn(cin, half, 1))
                src = cin
            else:
                self.left = None
                src = half
            self.right = nn.Sequential(conv_bn(src, half, 1), conv_bn(half, half, 3, s, g=half,
                                                                       act=None),
                                       conv_bn(half, half, 1))

        def forward(self, x):
            if self.s == 1:
                a, b = x.chunk(2, dim=1)
                y = torch.cat([a, self.right(b)], 1)
            else:
                y = torch.cat([self.left(x), self.right(x)], 1)
            n, c, h, w = y.shape  # shapes computed at run time in the export
            return y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)

    def shufflenet_v2(width=(116, 232, 464)):
        layers, cin = [conv_bn(3, 24, 3, 2), nn.MaxPool2d(3, 2, 1)], 24
        for c, n in zip(width, (4, 8, 4), strict=True):
            for j in range(n):
                layers.append(Shuffle(cin, c, 2 if j == 0 else 1))
                cin = c
        layers += [conv_bn(cin, 1024, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                   nn.Linear(1024, 1000)]
        return nn.Sequential(*layers)

    class Attention(nn.Module):
        def __init__(self, dim, heads):
            super().__init__()
            self.heads, self.scale = heads, (dim // heads) ** -0.5
            self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

        def forward(self, x):
            b, n, c = x.shape
            q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(
                2, 0, 3, 1, 4)
            a = torch.softmax(q @ k.transpose(-2, -1) * self.scale, dim=-1)
            return self.proj((a @ v).transpose(1, 2).reshape(b, n, c))

    class Block(nn.Module):
        def __init__(self, dim, heads):
            super().__init__()
            self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.attn = Attention(dim, heads)
            self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

        def forward(self, x):
            x = x + self.attn(self.n1(x))
            return x + self.mlp(self.n2(x))

    class ViT(nn.Module):
        def __init__(self, dim=384, depth=12, heads=6, patch=16, res=224):
            super().__init__()
            self.embed = nn.Conv2d(3, dim, patch, patch)
            n = (res // patch) ** 2
            self.cls = nn.Parameter(torch.zeros(1, 1, dim))
            self.pos = nn.Parameter(torch.zeros(1, n + 1, dim))
            self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
            self.norm = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, 1000)

        def forward(self, x):
            x = self.embed(x).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
            return self.head(self.norm(self.blocks(x))[:, 0])

    class ConvNeXtBlock(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.dw = nn.Conv2d(c, c, 7, 1, 3, groups=c)
            self.norm = nn.LayerNorm(c)
            self.fc1, self.fc2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)

        def forward(self, x):
            y = self.dw(x).permute(0, 2, 3, 1)
            y = self.fc2(nn.functional.gelu(self.fc1(self.norm(y))))
            return x + y.permute(0, 3, 1, 2)

    def convnext(dims=(64, 128, 256, 512), depths=(2, 2, 6, 2)):
        layers = [nn.Conv2d(3, dims[0], 4, 4)]
        for i, (c, n) in enumerate(zip(dims, depths, strict=True)):
            if i:
                layers.append(nn.Conv2d(dims[i - 1], c, 2, 2))
            layers += [ConvNeXtBlock(c) for _ in range(n)]
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(dims[-1], 1000)]
        return nn.Sequential(*layers)

    def vgg11():
        layers, cin = [], 3
        for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(cin, v, 3, 1, 1), nn.ReLU(inplace=True)]
                cin = v
        # global-pool head instead of the 400 MB 4096-wide classifier: same 7.6 GMAC of convs
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000)]
        return nn.Sequential(*layers)

    class Fire(nn.Module):
        def __init__(self, cin, s, e):
            super().__init__()
            self.s = nn.Sequential(nn.Conv2d(cin, s, 1), nn.ReLU())
            self.e1 = nn.Sequential(nn.Conv2d(s, e, 1), nn.ReLU())
            self.e3 = nn.Sequential(nn.Conv2d(s, e, 3, 1, 1), nn.ReLU())

        def forward(self, x):
            x = self.s(x)
            return torch.cat([self.e1(x), self.e3(x)], 1)

    def squeezenet():
        return nn.Sequential(
            nn.Conv2d(3, 96, 7, 2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(96, 16, 64), Fire(128, 16, 64), Fire(128, 32, 128),
            nn.MaxPool2d(3, 2, ceil_mode=True), Fire(256, 32, 128), Fire(256, 48, 192),
            Fire(384, 48, 192), Fire(384, 64, 256), nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(512, 64, 256), nn.Conv2d(512, 1000, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
            nn.Flatten())

    # name: (module factory, opset, dynamic batch axis, input resolution)
    return {
        "resnet18": (lambda: ResNet(Basic, (2, 2, 2, 2)), 17, False, 224),
        "resnet34": (lambda: ResNet(Basic, (3, 4, 6, 3)), 13, True, 224),
        "resnet50": (lambda: ResNet(Bottleneck, (3, 4, 6, 3)), 17, True, 224),
        "mobilenet_v2_r320": (lambda: mobilenet_v2(1.0), 11, False, 320),
        "mobilenet_v2_140": (lambda: mobilenet_v2(1.4), 17, True, 224),
        "efficientnet_b0_r320": (efficientnet_b0, 17, False, 320),
        "shufflenet_v2_x2": (lambda: shufflenet_v2((244, 488, 976)), 17, True, 224),
        "vit_small16": (lambda: ViT(384, 12, 6), 17, False, 224),
        "vit_tiny16": (lambda: ViT(192, 12, 3), 14, True, 224),
        "convnext_nano": (convnext, 17, False, 224),
        "vgg11_gap": (vgg11, 13, False, 224),
        "squeezenet": (squeezenet, 12, False, 224),
    }


def write_models(out_dir: str | Path, names: list[str] | None = None, seed: int = 0
                 ) -> list[Path]:
    """Export the models (all, or ``names``) to ``OUT_DIR/NAME.onnx``; returns the paths."""
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    zoo = _torch_models()
    paths = []
    for name in names or list(zoo):
        path = out / f"{name}.onnx"
        if path.exists():
            paths.append(path)
            continue
        factory, opset, dynamic, res = zoo[name]
        torch.manual_seed(seed)
        model = factory().eval()
        x = torch.randn(1, 3, res, res)
        axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic else None
        with torch.no_grad():
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=opset,
                              input_names=["input"], output_names=["output"],
                              dynamic_axes=axes)
        paths.append(path)
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python bench/user_models.py OUT_DIR")
    for p in write_models(sys.argv[1]):
        print(p)
