"""NAS-Bench-201: index mapping, parsing, skeleton figures, topology, ONNX equivalence."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from costmodels.errors import UnknownArchitecture
from costmodels.onnx_import import import_onnx
from costmodels.spaces import nb201

ALL_CONV = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"


def test_index_mapping_matches_every_reference_table(refdata):
    for path in sorted(refdata.glob("nb201_*.csv")):
        with open(path, newline="") as fh:
            rows = {int(r["arch_index"]): r["arch_str"] for r in csv.DictReader(fh)}
        assert len(rows) == len(nb201.SPACE) == 15625
        assert all(nb201.SPACE[i] == s for i, s in rows.items()), path.name


def test_known_indices_and_round_trip():
    assert nb201.SPACE[1462] == ALL_CONV
    assert nb201.SPACE[1835] == ALL_SKIP
    rng = np.random.default_rng(0)
    for i in rng.choice(15625, 200, replace=False):
        assert nb201.SPACE.index(nb201.SPACE[int(i)]) == i


@pytest.mark.parametrize("bad, reason", [
    ("", "3 node groups"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|+|none~0|none~1|none~2|", "2 input edge"),
    ("|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown operation"),
    ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "op~0"),
])
def test_bad_arch_strings_say_why(bad, reason):
    with pytest.raises(UnknownArchitecture, match=reason):
        nb201.parse_arch(bad)


def test_bad_index_and_dataset():
    with pytest.raises(UnknownArchitecture, match="0..15624"):
        nb201.SPACE[15625]
    with pytest.raises(ValueError, match="unknown NAS-Bench-201 dataset"):
        nb201.build_network(0, "imagenet")


def test_published_macs_and_params():
    big = nb201.build_network(ALL_CONV)
    assert round(big.macs / 1e6, 1) == 220.1
    assert round(big.params / 1e6, 2) == 1.53
    totals = [nb201.build_network(i) for i in range(15625)]
    smallest = min(totals, key=lambda n: n.macs)
    assert round(smallest.macs / 1e6, 1) == 7.8
    assert round(smallest.params / 1e6, 3) == 0.073


def test_datasets_change_resolution_and_classes():
    c100 = nb201.build_network(1462, "cifar100")
    im16 = nb201.build_network(1462, "ImageNet16-120")
    assert c100.layers[-1].output_shape == (1, 100)
    assert im16.inputs[0][1] == (1, 3, 16, 16)
    assert im16.macs < c100.macs


def test_disconnected_cells_and_isomorphism():
    ops = [nb201.parse_arch(s) for s in nb201.SPACE]
    assert sum(not nb201.is_connected(o) for o in ops) == 341
    assert len({nb201.canonical(o, "nb201") for o in ops}) == 6466
    assert len({nb201.canonical(o) for o in ops}) == 5273
    # the order of a sum and skip-as-identity do not matter; dead edges are dropped
    a = nb201.parse_arch("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|nor_conv_3x3~1|none~2|")
    b = nb201.parse_arch("|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|")
    assert nb201.canonical(a) == nb201.canonical(b)
    dead = nb201.parse_arch("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert not nb201.is_connected(dead) and nb201.canonical(dead) == "zero"
    assert nb201.live_edges(nb201.parse_arch(
        "|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|skip_connect~0|none~1|none~2|")) == (
        False, False, False, True, False, False)


@pytest.mark.parametrize("index", [0, 1462, 1835, 10, 4711, 15624])
def test_onnx_import_of_built_model_equals_direct_ir(index):
    for dataset in ("cifar10", "ImageNet16-120"):
        direct = nb201.build_network(index, dataset)
        imported = import_onnx(nb201.build_onnx(index, dataset))
        assert imported.layers == direct.layers
        assert imported == direct and imported.fingerprint == direct.fingerprint


def test_built_onnx_runs_in_onnxruntime():
    import onnxruntime as ort

    sess = ort.InferenceSession(nb201.build_onnx(1462).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"input": np.zeros((1, 3, 32, 32), np.float32)})
    assert y.shape == (1, 10) and np.isfinite(y).all()


def test_fingerprint_is_structural():
    a, b = nb201.build_network(1462), nb201.build_network(1462)
    assert a == b and hash(a) == hash(b)
    assert nb201.build_network(1835) != a
    assert nb201.build_onnx(7, seed=1) is not None


def test_sample_is_seeded_and_distinct():
    s = nb201.SPACE.sample(100, seed=3)
    assert s == nb201.SPACE.sample(100, seed=3) and len(set(s)) == 100
    assert s != nb201.SPACE.sample(100, seed=4)


def test_a_very_long_arch_string_is_refused_at_once():
    """A 25 KB arch string took a minute in the parsing regex (backtracking); refused now by
    its length, in no time, and a well-formed one still parses."""
    import time

    from costmodels.errors import UnknownArchitecture
    from costmodels.spaces import nb201

    t = time.perf_counter()
    with pytest.raises(UnknownArchitecture, match="25,500 characters"):
        nb201.parse_arch("|nor_conv_3x3~0|+" * 1500)
    with pytest.raises(UnknownArchitecture):
        nb201.parse_arch("|" + "a|+|" * 60 + "b|")
    assert time.perf_counter() - t < 5  # a hang guard, not a timing claim
    assert nb201.parse_arch(nb201.SPACE[1462]) == nb201.parse_arch(nb201.SPACE[1462])
