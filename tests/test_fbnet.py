"""FBNet (HW-NAS-Bench): arch strings, sampling, the two builders, and an independent
PyTorch reference written from HW-NAS-Bench's ``FBNet_Infer`` (counts and outputs)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from costmodels.errors import UnknownArchitecture, UnknownSpace
from costmodels.onnx_import import import_onnx
from costmodels.spaces import fbnet, get_space

SPACE = get_space("fbnet")
ALL0 = [0] * 22
LAST_G2 = [0] * 21 + [1]
ALL_SKIP = [8] * 22
RANDOM = [int(o) for o in np.random.default_rng(7).integers(0, 9, 22)]
EVERY_BLOCK = [1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 8, 1, 5, 8, 2, 6, 3, 7, 4, 0, 8, 5]


# --------------------------------------------------------------------- arch strings
def test_all_forms_parse_to_the_canonical_string():
    canon = "|".join(["k3_e1"] * 21 + ["k3_e1_g2"])
    assert SPACE.parse(canon) == canon
    assert SPACE.parse(",".join(map(str, LAST_G2))) == canon
    assert SPACE.parse(" " + ", ".join(map(str, LAST_G2)) + " ") == canon
    assert SPACE.parse(json.dumps(LAST_G2)) == canon
    assert SPACE.parse(LAST_G2) == canon
    assert SPACE.parse(json.dumps(canon.split("|"))) == canon
    assert fbnet.parse_arch(canon) == tuple(LAST_G2)


@pytest.mark.parametrize("bad, reason", [
    ("k3_e1|k3_e1", "expected 22 blocks, got 2"),
    (",".join(["0"] * 21), "expected 22 blocks, got 21"),
    ("|".join(["k3_e1"] * 21 + ["k7_e6"]), "layer 21: unknown block 'k7_e6'"),
    (",".join(["0"] * 21 + ["9"]), "layer 21: block index 9 is out of range 0..8"),
    (",".join(["0"] * 21 + ["-1"]), "out of range"),
    (",".join(["0"] * 20 + ["x", "0"]), "layer 20: 'x' is not a block index"),
    ("[0, 1", "not a valid JSON list"),
    (json.dumps([0] * 21 + [1.5]), "layer 21: 1.5 is not a block index"),
    ("nonsense", "block names joined by '|'"),
    (5, "no standard index"),
])
def test_bad_arch_strings_say_why(bad, reason):
    with pytest.raises(UnknownArchitecture, match=reason.replace("|", r"\|")):
        SPACE.parse(bad)


def test_sampling_is_deterministic_distinct_and_never_enumerates():
    a = SPACE.sample(50, seed=3)
    assert a == SPACE.sample(50, seed=3)
    assert a != SPACE.sample(50, seed=4)
    assert len(set(a)) == 50 and all(SPACE.parse(s) == s for s in a)
    # every block turns up at every layer over a few hundred draws
    ops = np.array([fbnet.parse_arch(s) for s in SPACE.sample(400, seed=0)])
    assert all(len(set(ops[:, j])) == 9 for j in range(22))
    assert SPACE.size is None and not SPACE.has_index and SPACE.index(a[0]) is None
    assert SPACE.describe()["num_archs"] == 9 ** 22
    with pytest.raises(UnknownSpace, match="too large to enumerate"):
        next(iter(SPACE.archs()))
    with pytest.raises(UnknownSpace):
        SPACE.sample(0)


def test_encode_is_one_hot_per_layer():
    enc = SPACE.encode(SPACE.parse(EVERY_BLOCK)).reshape(22, 9)
    assert (enc.sum(axis=1) == 1).all() and list(enc.argmax(axis=1)) == EVERY_BLOCK


# --------------------------------------------------------------------- builders
@pytest.mark.parametrize("dataset", ["cifar100", "ImageNet"])
def test_meta_shapes_and_dataset_skeleton(dataset):
    net = SPACE.build_network(SPACE.parse(RANDOM), dataset, batch=2)
    assert net.meta == {"space": "fbnet", "arch_str": SPACE.parse(RANDOM), "arch_index": None,
                        "dataset": dataset, "batch": 2, "ops": tuple(RANDOM)}
    ds = fbnet.DATASETS[dataset]
    assert net.inputs == (("input", (2, 3, ds.resolution, ds.resolution)),)
    by_name = {layer.name: layer for layer in net}
    final = 4 if dataset == "cifar100" else 7
    assert by_name["header_conv"].output_shape == (2, ds.header_channels, final, final)
    assert by_name["logits"].output_shape == (2, ds.num_classes)


def test_unknown_dataset_is_a_space_error():
    with pytest.raises(UnknownSpace, match="expected one of: cifar100, ImageNet"):
        SPACE.build_network(SPACE.parse(ALL0), "cifar10")


@pytest.mark.parametrize("dataset", ["cifar100", "ImageNet"])
@pytest.mark.parametrize("ops", [ALL0, LAST_G2, ALL_SKIP, EVERY_BLOCK])
def test_onnx_imports_to_the_same_ir(ops, dataset):
    arch = SPACE.parse(ops)
    net = SPACE.build_network(arch, dataset)
    imported = import_onnx(SPACE.build_onnx(arch, dataset, seed=1))
    assert imported == net
    assert (imported.macs, imported.params) == (net.macs, net.params)


def test_identity_skip_has_no_operators_and_shape_changing_skip_is_a_conv():
    net = SPACE.build_network(SPACE.parse(ALL_SKIP))
    # 22 skips: only the 6 stage-first layers change shape (stage 0 keeps 16 at stride 1)
    convs = [layer for layer in net if layer.op == "Conv"]
    assert len(convs) == 1 + 6 + 1  # stem, 6 shape-changing skips, header
    assert all(c.kernel == (1, 1) for c in convs[1:])


# --------------------------------------------------------------------- reference
def reference_module(ops, dataset):
    """HW-NAS-Bench's FBNet_Infer, rewritten here in plain torch from its structure."""
    import torch
    from torch import nn

    cifar = "cifar" in dataset

    def conv_norm(cin, cout, k, s, p):
        return nn.Sequential(nn.Conv2d(cin, cout, k, s, p, bias=False), nn.BatchNorm2d(cout),
                             nn.ReLU())

    class Shuffle(nn.Module):
        def __init__(self, g):
            super().__init__()
            self.g = g

        def forward(self, x):
            n, c, h, w = x.size()
            return x.view(n, self.g, c // self.g, h, w).permute(0, 2, 1, 3, 4).reshape(n, c, h, w)

    class Block(nn.Module):
        def __init__(self, cin, cout, e, k, s, g):
            super().__init__()
            mid = cin * e
            pad = int(np.ceil((k - s) / 2))
            self.conv1 = nn.Conv2d(cin, mid, 1, 1, 0, groups=g, bias=False)
            self.bn1 = nn.BatchNorm2d(mid)
            self.shuffle = Shuffle(g) if g > 1 else nn.Identity()
            self.conv2 = nn.Conv2d(mid, mid, k, s, pad, groups=mid, bias=False)
            self.bn2 = nn.BatchNorm2d(mid)
            self.conv3 = nn.Conv2d(mid, cout, 1, 1, 0, groups=g, bias=False)
            self.bn3 = nn.BatchNorm2d(cout)
            self.res = cin == cout and s == 1

        def forward(self, x):
            y = self.shuffle(torch.relu(self.bn1(self.conv1(x))))
            y = self.bn3(self.conv3(torch.relu(self.bn2(self.conv2(y)))))
            return y + x if self.res else y

    class Skip(nn.Module):
        def __init__(self, cin, cout, s):
            super().__init__()
            self.body = conv_norm(cin, cout, 1, s, 0) if s == 2 or cin != cout else None

        def forward(self, x):
            return self.body(x) if self.body is not None else x

    blocks = {0: (1, 3, 1), 1: (1, 3, 2), 2: (3, 3, 1), 3: (6, 3, 1), 4: (1, 5, 1),
              5: (1, 5, 2), 6: (3, 5, 1), 7: (6, 5, 1)}
    strides = [1, 1, 2, 2, 1, 2, 1] if cifar else [1, 2, 2, 2, 1, 2, 1]
    channels = [16, 24, 32, 64, 112, 184, 352]
    layers, cin, i = [conv_norm(3, 16, 3, 1 if cifar else 2, 1)], 16, 0
    for stage, n in enumerate([1, 4, 4, 4, 4, 4, 1]):
        for j in range(n):
            s = strides[stage] if j == 0 else 1
            cout = channels[stage]
            if ops[i] == 8:
                layers.append(Skip(cin, cout, s))
            else:
                e, k, g = blocks[ops[i]]
                layers.append(Block(cin, cout, e, k, s, g))
            cin, i = cout, i + 1
    header = 1504 if cifar else 1984
    layers += [conv_norm(352, header, 1, 1, 0), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
               nn.Linear(header, 100 if cifar else 1000)]
    return nn.Sequential(*layers).eval()


def reference_counts(model, resolution):
    """(MACs of Conv2d and Linear, parameters) of the torch module, by forward hooks."""
    params = sum(p.numel() for p in model.parameters())
    import torch
    from torch import nn

    macs = []

    def hook(mod, inp, out):
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1]
            macs.append(out.numel() * (mod.in_channels // mod.groups) * k)
        else:
            macs.append(out.numel() * mod.in_features)

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():  # on the meta device: shapes only, no arithmetic
        model.to("meta")(torch.zeros(1, 3, resolution, resolution, device="meta"))
    for h in handles:
        h.remove()
    return sum(macs), params


@pytest.mark.parametrize("dataset", ["cifar100", "ImageNet"])
@pytest.mark.parametrize("ops", [ALL0, LAST_G2, ALL_SKIP, RANDOM, EVERY_BLOCK])
def test_macs_and_params_match_the_pytorch_reference(ops, dataset):
    pytest.importorskip("torch")
    net = SPACE.build_network(SPACE.parse(ops), dataset)
    macs, params = reference_counts(reference_module(ops, dataset),
                                    fbnet.DATASETS[dataset].resolution)
    assert net.macs == macs
    assert net.params == params


def test_all_k3_e1_counts_by_hand():
    """[0]*22 on cifar100 from a closed formula (no torch): every layer's three convs."""
    h, cin, macs, params = 32, 16, 3 * 16 * 9 * 32 * 32, 3 * 16 * 9 + 2 * 16
    for stage, n in enumerate([1, 4, 4, 4, 4, 4, 1]):
        for j in range(n):
            s = [1, 1, 2, 2, 1, 2, 1][stage] if j == 0 else 1
            cout = [16, 24, 32, 64, 112, 184, 352][stage]
            ho = h // s
            macs += cin * cin * h * h + cin * 9 * ho * ho + cin * cout * ho * ho
            params += cin * cin + 9 * cin + cin * cout + 2 * (cin + cin + cout)
            h, cin = ho, cout
    macs += 352 * 1504 * h * h + 1504 * 100
    params += 352 * 1504 + 2 * 1504 + 1504 * 100 + 100
    net = SPACE.build_network(SPACE.parse(ALL0), "cifar100")
    assert (net.macs, net.params) == (macs, params)


@pytest.mark.parametrize("ops", [EVERY_BLOCK, ALL_SKIP])
def test_onnx_computes_what_the_pytorch_reference_computes(ops):
    """Weights of our ONNX copied into the reference module: same logits under ORT and torch
    (checks BN/ReLU placement, shuffle order, residuals, padding, not only the counts)."""
    torch = pytest.importorskip("torch")
    import onnxruntime as ort
    from onnx import numpy_helper

    model = SPACE.build_onnx(SPACE.parse(ops), "cifar100", seed=3)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    by_op: dict[str, list] = {"Conv": [], "BatchNormalization": [], "Gemm": []}
    for node in model.graph.node:
        if node.op_type in by_op:
            by_op[node.op_type].append([inits[n] for n in node.input[1:]])
    ref = reference_module(ops, "cifar100")
    convs = [m for m in ref.modules() if isinstance(m, torch.nn.Conv2d)]
    bns = [m for m in ref.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for m, (w,) in zip(convs, by_op["Conv"], strict=True):
            m.weight.copy_(torch.from_numpy(np.array(w)))
        for m, (scale, bias, mean, var) in zip(bns, by_op["BatchNormalization"], strict=True):
            for dst, src in ((m.weight, scale), (m.bias, bias), (m.running_mean, mean),
                             (m.running_var, var)):
                dst.copy_(torch.from_numpy(np.array(src)))
        (w, b), = by_op["Gemm"]
        ref[-1].weight.copy_(torch.from_numpy(np.array(w)))
        ref[-1].bias.copy_(torch.from_numpy(np.array(b)))
        x = np.random.default_rng(0).normal(size=(1, 3, 32, 32)).astype(np.float32)
        want = ref(torch.from_numpy(x)).numpy()
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x})[0]
    scale = float(np.abs(want).max())
    assert scale > 0 and np.abs(got - want).max() <= 1e-3 * scale


def test_building_many_networks_reuses_cached_fragments():
    archs = SPACE.sample(30, seed=11)
    first = [SPACE.build_network(a) for a in archs]
    again = [SPACE.build_network(a) for a in archs]
    # the same layer at the same place is the same object across builds
    assert all(x.layers[i] is y.layers[i] for x, y in zip(first, again, strict=True)
               for i in range(len(x.layers)))
