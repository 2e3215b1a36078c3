"""Feature schema of the learned predictors."""

from __future__ import annotations

import numpy as np

from costmodels.network import Network, make_layer
from costmodels.spaces import nb201
from predictors import features as F


def _col(x, name):
    return x[:, F.FEATURE_NAMES.index(name)]


def test_schema_matches_columns_and_is_versioned():
    nets = [nb201.build_network(i) for i in (0, 1462, 1835)]
    x = F.features(nets)
    assert x.shape == (3, len(F.FEATURE_NAMES))
    s = F.schema()
    assert (s["name"], s["version"]) == (F.SCHEMA_NAME, F.SCHEMA_VERSION)
    assert len(set(F.FEATURE_NAMES)) == len(F.FEATURE_NAMES)


def test_nb201_values_agree_with_the_ir():
    net = nb201.build_network(1462)  # all nor_conv_3x3
    x = F.features([net])
    assert _col(x, "macs")[0] == net.macs
    assert _col(x, "layers")[0] == len(net)
    assert _col(x, "n_live_nor_conv_3x3")[0] == 6
    assert _col(x, "connected")[0] == 1
    stages = sum(_col(x, f"stage{s}_macs")[0] for s in range(4))
    assert stages == sum(layer.macs for layer in net.layers if len(layer.output_shape) == 4)
    assert 0 < _col(x, "kernels")[0] < len(net)


def test_disconnected_cell_is_flagged():
    ops = (0, 1, 0, 0, 0, 0)  # node 3 has no input: disconnected
    assert not nb201.is_connected(ops)
    x = F.features([nb201.build_network(ops)])
    assert _col(x, "connected")[0] == 0 and _col(x, "live_edges")[0] == 0


def test_batch_equals_one_by_one_and_caches_do_not_change_values():
    idx = [5, 77, 1462, 9000]
    nets = [nb201.build_network(i, "cifar100") for i in idx]
    together = F.features(nets)
    F.clear_caches()
    alone = np.vstack([F.features([n]) for n in nets])
    np.testing.assert_array_equal(together, alone)


def test_network_from_elsewhere_has_nan_cell_part():
    conv = make_layer("conv", "Conv", ["x"], ["c"], [(1, 3, 8, 8)], (1, 4, 8, 8),
                      [(4, 3, 3, 3)], kernel=(3, 3), stride=(1, 1), pads=(1, 1, 1, 1))
    relu = make_layer("relu", "Relu", ["c"], ["y"], [(1, 4, 8, 8)], (1, 4, 8, 8))
    net = Network("tiny", (("x", (1, 3, 8, 8)),), (conv, relu), ("y",))
    x = F.features([net])
    assert _col(x, "depth")[0] == 2 and _col(x, "kernels")[0] == 1
    assert np.isnan(_col(x, "e0_none")[0])
    assert _col(x, "connected")[0] == 1
