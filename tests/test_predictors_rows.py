"""Transfer and few-shot models off NAS-Bench-201: FBNet and a folder of ONNX models.

The source tables of such a space list architectures by ``arch_str``; the models look
networks up by it (:mod:`predictors.rows`).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from costmodels.spaces import get_space
from costmodels.tables import LatencyTable, write_table
from predictors import make
from predictors.base import PredictorError
from predictors.rows import Rows


def _device(nets, a: float, b: float, c: float, noise: float, seed: int) -> np.ndarray:
    """A synthetic device: latency linear in MACs, bytes and layer count, lognormal noise."""
    rng = np.random.default_rng(seed)
    y = np.array([a + b * n.macs * 1e-7 + c * n.bytes * 1e-6 + 0.002 * len(n) for n in nets])
    return y * np.exp(rng.normal(0, noise, len(y)))


@pytest.fixture(scope="module")
def fbnet():
    space = get_space("fbnet")
    archs = space.sample(80, seed=3)
    nets = [space.build_network(a) for a in archs]
    srcs = [LatencyTable(np.full(len(archs), -1), tuple(archs), _device(nets, *p, 0.01, s),
                         source=f"fbnet_src{s}.csv")
            for s, p in enumerate([(0.2, 1.0, 0.1), (0.1, 0.2, 1.0), (0.5, 0.6, 0.5)])]
    # the target weighs compute and memory unlike any one source
    y = _device(nets, 0.3, 0.7, 0.8, 0.01, 9)
    return space, archs, nets, srcs, y


@pytest.mark.parametrize("name", ["transfer", "fewshot"])
def test_few_shot_on_fbnet_ranks_the_other_architectures(fbnet, name, tmp_path):
    _, _, nets, srcs, y = fbnet
    est = make(name, sources=srcs).fit(nets[:10], y[:10])
    pred = est.predict(nets[10:])
    rho = spearmanr(pred, y[10:])[0]
    # ten cells of a target that is no one source: the mix ranks the other 70 well,
    # better than the best single source does
    best_source = max(spearmanr(s.latency_ms[10:], y[10:])[0] for s in srcs)
    assert rho > 0.95 and rho > best_source
    est.save(tmp_path / name)
    again = type(est).load(tmp_path / name)
    np.testing.assert_allclose(again.predict(nets[10:]), pred, rtol=1e-6)


def test_fbnet_network_outside_the_sources_is_named(fbnet):
    space, archs, nets, srcs, y = fbnet
    est = make("transfer", sources=srcs).fit(nets[:10], y[:10])
    other = next(a for a in space.sample(200, seed=11) if a not in set(archs))
    with pytest.raises(PredictorError, match="in none of the source tables"):
        est.predict([space.build_network(other)])
    nb = get_space("nb201").build_network(get_space("nb201").parse(5))
    with pytest.raises(PredictorError, match="space 'nb201'"):
        est.predict([nb])


def test_rows_key_the_tables_union_and_build_their_networks(fbnet):
    space, archs, nets, srcs, _ = fbnet
    half = srcs[0].subset(np.arange(40))
    rows = Rows.for_networks(nets[:5], [half, srcs[1]])
    assert len(rows) == 80 and list(rows.keys) == sorted(archs)
    m = rows.matrix([half, srcs[1]])
    assert np.isnan(m[:, 0]).sum() == 40 and np.isfinite(m[:, 1]).all()
    idx = rows.index(nets[:5])
    assert [rows.keys[i] for i in idx] == list(archs[:5])
    assert [n.meta["arch_str"] for n in rows.networks(idx)] == list(archs[:5])
    assert rows.priors().shape == (80, len(rows.prior_names()))


def test_fewshot_on_fbnet_uses_the_generic_additive_family(fbnet):
    _, _, nets, srcs, y = fbnet
    est = make("fewshot", sources=srcs, families=("additive",), priors="none")
    pred = est.fit(nets[:10], y[:10]).predict(nets[10:])
    assert spearmanr(pred, y[10:])[0] > 0.95
    for fam in ("mix-dce", "counts"):
        with pytest.raises(PredictorError, match=f"{fam} needs NAS-Bench-201"):
            make("fewshot", sources=srcs, families=(fam,)).fit(nets[:10], y[:10])
    default = make("fewshot", sources=srcs, priors="none").fit(nets[:10], y[:10])
    assert "counts" not in default.report_["families"]


def _conv_model(path, channels: int, layers: int, size: int = 16, batch: int | str = 1
                ) -> None:
    from onnx import TensorProto, helper, numpy_helper, save

    rng = np.random.default_rng(channels * 10 + layers)
    nodes, inits, prev, c_in = [], [], "x", 3
    for i in range(layers):
        w = rng.normal(0, 0.1, (channels, c_in, 3, 3)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], name=f"conv{i}",
                                   pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        prev, c_in = f"r{i}", channels
    g = helper.make_graph(nodes, "m",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                         [batch, 3, size, size])],
                          [helper.make_tensor_value_info(prev, TensorProto.FLOAT,
                                                         [batch, channels, size, size])], inits)
    save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_fit_and_estimate_fewshot_on_a_model_folder(tmp_path, capsys):
    from costmodels.cli import main

    d = tmp_path / "models"
    d.mkdir()
    shapes = [(c, n) for c in (4, 8, 12, 16) for n in (1, 2, 3)]
    for c, n in shapes:
        _conv_model(d / f"conv_c{c}_n{n}.onnx", c, n)
    space = get_space(f"models:{d}")
    archs = list(space.archs())
    nets = [space.build_network(a) for a in archs]
    for s, p in enumerate([(0.1, 1.0, 0.1), (0.1, 0.1, 1.0)]):
        write_table(tmp_path / f"dev{s}.csv", [None] * len(archs), archs, _device(nets, *p, 0.0, s))
    y = _device(nets, 0.1, 0.5, 0.5, 0.0, 0)
    write_table(tmp_path / "target.csv", [None] * 6, archs[:6], y[:6])
    out = tmp_path / "fs"
    assert main(["fit", "fewshot", "--space", f"models:{d}", "--train",
                 str(tmp_path / "target.csv"), "--source", str(tmp_path / "dev0.csv"),
                 str(tmp_path / "dev1.csv"), "-o", str(out)]) == 0
    assert main(["estimate", f"fewshot:{out}", "--space", f"models:{d}",
                 "-o", str(tmp_path / "est.csv")]) == 0
    from costmodels.tables import read_table

    est = read_table(tmp_path / "est.csv", space=space)
    pos = est.lookup()
    pred = np.array([est.latency_ms[pos[a]] for a in archs])
    assert spearmanr(pred[6:], y[6:])[0] > 0.9


@pytest.mark.parametrize("name", ["transfer", "fewshot"])
def test_a_folder_of_models_of_other_input_sizes_keeps_each_ones_size(tmp_path, name, capsys):
    """The first training model's input size is not the folder's: a dynamic-batch model of
    another size is still built at its own (it was given the first one's as an
    --input-shape, and fit refused it or left it out of the rows)."""
    from costmodels.cli import main

    d = tmp_path / "models"
    d.mkdir()
    _conv_model(d / "a_big.onnx", 8, 2, size=32)
    _conv_model(d / "dyn.onnx", 8, 2, batch="batch")
    for c in (4, 12, 16):
        _conv_model(d / f"conv{c}.onnx", c, 1)
    space = get_space(f"models:{d}")
    archs = list(space.archs())
    nets = [space.build_network(a) for a in archs]
    assert nets[0].inputs[0][1] == (1, 3, 32, 32) and archs[1] == "conv12"
    for s, p in enumerate([(0.1, 1.0, 0.1), (0.1, 0.1, 1.0)]):
        # another device's table lists a model this folder lacks: that row is left out
        write_table(tmp_path / f"dev{s}.csv", [None] * (len(archs) + 1), [*archs, "gone"],
                    [*_device(nets, *p, 0.0, s), 1.0])
    y = _device(nets, 0.1, 0.5, 0.5, 0.0, 0)
    write_table(tmp_path / "target.csv", [None] * 3, archs[:3], y[:3])  # a_big first
    out = tmp_path / name
    assert main(["fit", name, "--space", f"models:{d}", "--train", str(tmp_path / "target.csv"),
                 "--source", str(tmp_path / "dev0.csv"), str(tmp_path / "dev1.csv"),
                 "-o", str(out)]) == 0
    assert "left out 1 row(s) naming models that are not in" in capsys.readouterr().err
    assert main(["estimate", f"{name}:{out}", "--space", f"models:{d}",
                 "-o", str(tmp_path / "est.csv")]) == 0
    from costmodels.tables import read_table

    assert read_table(tmp_path / "est.csv", space=space).arch_str[-1] == "dyn"


def test_fewshot_curve_cli_on_fbnet(fbnet, tmp_path):
    from costmodels.cli import main

    _, archs, _, srcs, y = fbnet
    for t in srcs:
        write_table(tmp_path / t.source, [None] * len(t), t.arch_str, t.latency_ms)
    write_table(tmp_path / "target.csv", [None] * len(archs), archs, y)
    out = tmp_path / "curve.csv"
    assert main(["fewshot", "--space", "fbnet", "--target", str(tmp_path / "target.csv"),
                 "--source", *[str(tmp_path / t.source) for t in srcs], "--samples", "10",
                 "--seeds", "2", "-o", str(out)]) == 0
    import csv

    row = next(csv.DictReader(open(out)))
    assert row["k"] == "10" and float(row["spearman"]) > 0.95


def test_fewshot_curve_with_no_usable_k_is_one_error(fbnet, tmp_path, capsys):
    from costmodels.cli import main

    _, archs, _, _, y = fbnet
    write_table(tmp_path / "target.csv", [None] * len(archs), archs, y)
    out = tmp_path / "curve.csv"
    assert main(["fewshot", "--space", "fbnet", "--target", str(tmp_path / "target.csv"),
                 "--model", "gbdt", "--samples", "500", "-o", str(out)]) == 2
    assert "error: no --samples value leaves a network to score" in capsys.readouterr().err
    assert not out.exists()


def test_select_writes_the_cells_to_measure_spread_over_the_sources(fbnet, tmp_path, capsys):
    from costmodels.cli import main, read_arch_list

    space, archs, _, srcs, _ = fbnet
    for t in srcs:
        write_table(tmp_path / t.source, [None] * len(t), t.arch_str, t.latency_ms)
    paths = [str(tmp_path / t.source) for t in srcs]
    out = tmp_path / "cells.csv"
    assert main(["select", "8", "--space", "fbnet", "--source", *paths, "-o", str(out)]) == 0
    cells = read_arch_list(str(out), space)  # what measure-space --archs reads
    assert len(set(cells)) == 8 and set(cells) <= set(archs)
    # diverse: one cell per consensus bin, so both ends of the sources' range are covered
    cons = np.mean([np.log(t.latency_ms / t.latency_ms.mean()) for t in srcs], axis=0)
    rank = {a: r for r, a in enumerate(np.array(archs)[np.argsort(cons)])}
    ranks = sorted(rank[c] for c in cells)
    assert ranks[0] < 10 and ranks[-1] >= 70
    again = tmp_path / "again.csv"
    assert main(["select", "8", "--space", "fbnet", "--source", *paths, "-o", str(again)]) == 0
    assert again.read_text() == out.read_text()
    capsys.readouterr()
    assert main(["select", "3", "--space", "fbnet", "-o", str(tmp_path / "x.csv")]) == 2
    assert "--archs" in capsys.readouterr().err
    assert main(["select", "99", "--space", "fbnet", "--source", *paths,
                 "-o", str(tmp_path / "x.csv")]) == 2
    assert "at most 80" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()


def test_fit_leaves_out_a_training_row_whose_model_cannot_be_costed(tmp_path, capsys):
    """``estimate`` and ``compare`` keep a folder's model that fails to import as a row with
    its error; ``fit`` leaves its training row out with a warning (it ended the fit)."""
    from onnx import TensorProto, helper, save

    from costmodels.cli import main

    d = tmp_path / "models"
    d.mkdir()
    for c in (4, 8, 12, 16):
        _conv_model(d / f"conv_c{c}.onnx", c, 2)
    g = helper.make_graph([helper.make_node("NonMaxSuppression", ["b", "s"], ["sel"], name="nms")],
                          "det", [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 8, 4]),
                                  helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 1, 8])],
                          [helper.make_tensor_value_info("sel", TensorProto.INT64, None)])
    save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(d / "det.onnx"))
    archs = ["conv_c4", "conv_c8", "conv_c12", "conv_c16", "det"]
    write_table(tmp_path / "truth.csv", [None] * 5, archs, [0.1, 0.2, 0.3, 0.4, 0.05])
    out = tmp_path / "gbdt"
    assert main(["fit", "gbdt", "--space", f"models:{d}", "--train", str(tmp_path / "truth.csv"),
                 "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "left out 1 of 5 training rows" in err and "NonMaxSuppression" in err
    assert "gbdt on 4 networks" in err
    write_table(tmp_path / "det.csv", [None], ["det"], [0.05])
    assert main(["fit", "gbdt", "--space", f"models:{d}", "--train", str(tmp_path / "det.csv"),
                 "-o", str(tmp_path / "none")]) == 2
    assert "none of the 1 training rows can be built" in capsys.readouterr().err
    cells = tmp_path / "cells.csv"  # select leaves the candidate out the same way
    assert main(["select", "3", "--space", f"models:{d}", "-o", str(cells)]) == 0
    assert "left out 1 of 5 candidates" in capsys.readouterr().err
    import csv

    chosen = [r["arch_str"] for r in csv.DictReader(cells.open())]
    assert len(chosen) == 3 and "det" not in chosen
    assert main(["select", "5", "--space", f"models:{d}", "-o", str(cells)]) == 2
    assert "of the 4 candidate networks that can be built" in capsys.readouterr().err
    # fewshot leaves the target row out, and a source table's row of it (no features)
    write_table(tmp_path / "src.csv", [None] * 5, archs, [0.2, 0.5, 0.6, 0.9, 0.1])
    curve = tmp_path / "curve.csv"
    assert main(["fewshot", "--space", f"models:{d}", "--target", str(tmp_path / "truth.csv"),
                 "--source", str(tmp_path / "src.csv"), "--samples", "2", "--seeds", "1",
                 "-o", str(curve)]) == 0
    err = capsys.readouterr().err
    assert "left out 1 of 5 target rows" in err and "left out 1 source row(s)" in err
    assert "k=    2" in err and curve.exists()
    assert main(["fit", "fewshot", "--space", f"models:{d}", "--train",
                 str(tmp_path / "truth.csv"), "--source", str(tmp_path / "src.csv"),
                 "-o", str(tmp_path / "fs")]) == 0
    assert "fewshot on 4 networks" in capsys.readouterr().err
