"""Benchmark of the analytical backends: query speed, HW-NAS-Bench reference values, silicon.

``section(quick)`` returns markdown with three tables, every figure measured in this run:

1. **Query cost** over NAS-Bench-201 cells (all 15,625; ``quick``: the first 1,000):
   seconds to cost them with ``flops`` (the MACs proxy), ``roofline:xeon_2c``,
   ``eyeriss``, ``eyeriss:eyeriss_rs`` and ``fpga`` (``estimate_many``), as a ratio to
   ``flops`` and to building the IRs, all in the same process. Timings on a shared
   machine are noisy: read the ratios, not the seconds.
2. **HW-NAS-Bench reference values** (README / example.ipynb of GATECH-EIC/HW-NAS-Bench,
   the literals of tests/test_analytical_reference.py) beside ours, error in %.
3. **Eyeriss against silicon**: AlexNet's five conv layers at batch 4 (Chen et al., JSSC
   2017: 115.3 ms at 200 MHz, 278 mW) beside the ``eyeriss`` and ``eyeriss_rs`` models.

Run ``python bench/bench_analytical.py [--quick]`` to print it.
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SPEED_BACKENDS = ("flops", "roofline:xeon_2c", "eyeriss", "eyeriss:eyeriss_rs", "fpga")
# Chen et al., "Eyeriss: An Energy-Efficient Reconfigurable Accelerator for Deep CNNs",
# IEEE JSSC 52(1), 2017, Table V: AlexNet CONV1-5, batch 4, 200 MHz core clock.
SILICON_MS, SILICON_MW = 115.3, 278.0
# (name, C_in, C_out, kernel, stride, pad, groups, input H = W)
ALEXNET_CONVS = (("conv1", 3, 96, 11, 4, 0, 1, 227), ("conv2", 96, 256, 5, 1, 2, 2, 27),
                 ("conv3", 256, 384, 3, 1, 1, 1, 13), ("conv4", 384, 384, 3, 1, 1, 2, 13),
                 ("conv5", 384, 256, 3, 1, 1, 2, 13))


def alexnet_convs(batch: int = 4):
    """AlexNet's five conv layers (the grouped original) as one IR network, ``batch`` images."""
    from costmodels.network import Network, make_layer

    layers, inputs = [], []
    for name, cin, cout, k, s, p, g, h in ALEXNET_CONVS:
        e = (h + 2 * p - k) // s + 1
        x = f"{name}_in"
        inputs.append((x, (batch, cin, h, h)))
        layers.append(make_layer(name, "Conv", [x], [f"{name}_out"], [(batch, cin, h, h)],
                                 (batch, cout, e, e), [(cout, cin // g, k, k)], kernel=(k, k),
                                 stride=(s, s), pads=(p,) * 4, dilation=(1, 1), groups=g))
    return Network("alexnet_convs", tuple(inputs), tuple(layers),
                   tuple(x.outputs[0] for x in layers), meta={"batch": batch})


def speed_table(quick: bool) -> str:
    from costmodels.registry import create
    from costmodels.spaces import get_space

    space = get_space("nb201")
    n = 1000 if quick else space.size
    archs = list(itertools.islice(space.archs(), n))
    t0 = time.perf_counter()
    nets = [space.build_network(a, "cifar10", 1) for a in archs]
    build_s = time.perf_counter() - t0
    rows, base = [], None
    for spec in SPEED_BACKENDS:
        model = create(spec)
        t0 = time.perf_counter()
        model.estimate_many(nets)
        secs = time.perf_counter() - t0
        base = base or secs
        rows.append(f"| `{spec}` | {secs:.2f} | {secs / base:.1f}x | {secs / build_s:.2f}x |")
    head = (f"Query cost over {n:,} NAS-Bench-201 cells (cifar10, batch 1; building their IRs "
            f"took {build_s:.2f} s). Shared 2-core machine: timings are noisy.\n\n"
            "| backend | seconds | vs `flops` | vs IR build |\n|---|---:|---:|---:|")
    return "\n".join([head, *rows])


def _pct(ours: float, ref: float) -> str:
    return f"{100 * (ours / ref - 1):+.1f}%"


def reference_table() -> str:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_analytical_reference import FBNET, NB201

    from costmodels.registry import create
    from costmodels.spaces import get_space

    eyeriss, fpga = create("eyeriss"), create("fpga")
    nb = get_space("nb201")
    archs = list(itertools.islice(nb.archs(), 3))
    fb = get_space("fbnet")
    fb_arch = {"[0]*22": [0] * 22, "[0]*21+[1]": [0] * 21 + [1],
               "[0]*20+[1,1]": [0] * 20 + [1, 1]}
    rows = ["| space | arch | dataset | eyeriss ms (ours / HW-NAS-Bench) | eyeriss mJ | "
            "fpga ms | fpga mJ |", "|---|---|---|---|---|---|---|"]
    cases = [("nb201", i, ds, nb.build_network(archs[i], ds, 1), ref)
             for (i, ds), ref in NB201.items()]
    cases += [("fbnet", a, ds, fb.build_network(fb.parse(fb_arch[a]), ds, 1), ref)
              for (a, ds), ref in FBNET.items()]
    for space, arch, ds, net, (el, ee, fl, fe) in cases:
        e, f = eyeriss.estimate(net), fpga.estimate(net)
        cells = [f"{o:.4g} / {r:.4g} ({_pct(o, r)})" for o, r in
                 ((e.latency_ms, el), (e.energy_mj, ee), (f.latency_ms, fl), (f.energy_mj, fe))]
        rows.append(f"| {space} | {arch} | {ds} | " + " | ".join(cells) + " |")
    return ("HW-NAS-Bench's published values (README, example.ipynb) beside ours. The "
            "eyeriss latency differences between NAS-Bench-201 cells are reproduced exactly; "
            "the gap is an architecture-independent part (analytical/README.md).\n\n"
            + "\n".join(rows))


def silicon_table() -> str:
    from costmodels.registry import create

    net = alexnet_convs(batch=4)
    rows = ["| source | latency ms | energy mJ | power mW |", "|---|---:|---:|---:|",
            f"| Eyeriss silicon (JSSC 2017) | {SILICON_MS:.1f} | "
            f"{SILICON_MS * SILICON_MW / 1e3:.1f} | {SILICON_MW:.0f} |"]
    for spec in ("eyeriss", "eyeriss:eyeriss_rs"):
        est = create(spec).estimate(net)
        mw = est.energy_mj / est.latency_ms * 1e3
        rows.append(f"| `{spec}` | {est.latency_ms:.1f} | {est.energy_mj:.1f} | {mw:.0f} |")
    return ("AlexNet CONV1-5 (grouped conv2/4/5 as in the original), batch 4, "
            f"{net.macs / 1e9:.2f} GMAC.\n\n" + "\n".join(rows))


def section(quick: bool = False) -> str:
    """The markdown section of the analytical backends (all figures measured now)."""
    return "\n\n".join(["## Analytical backends", "### Query cost", speed_table(quick),
                        "### HW-NAS-Bench reference values", reference_table(),
                        "### Eyeriss against silicon", silicon_table()])


if __name__ == "__main__":
    print(section(quick="--quick" in sys.argv[1:]))
