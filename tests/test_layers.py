"""Tests of fastcnn.layers: layer specifications pickle, compare and hash
by value, and validate their arguments when constructed."""
import pickle

import pytest

import fastcnn.layers as L
from fastcnn._network import layer_output_shape
from fastcnn.layers import (AvgPool1D, AvgPool2D, Conv1D, Conv2D, Dense,
                            Flatten, MaxPool1D, MaxPool2D, ReLU)
from fastcnn.layers import BatchNorm1D, BatchNorm2D, LocalResponseNorm


# ================================================ pickle, compare, hash

ALL_SPECS = [Conv2D(4, 3, padding="same"), Conv2D(2, (3, 1), stride=(1, 2), padding=(1, 0)),
             Conv1D(2, 3, stride=2), MaxPool2D(2), MaxPool1D(2, stride=1),
             AvgPool2D((2, 1)), AvgPool1D(3), ReLU(), Flatten(), Dense(5)]


@pytest.mark.parametrize("spec", ALL_SPECS, ids=repr)
def test_layer_specs_pickle_compare_and_hash(spec):
    loaded = pickle.loads(pickle.dumps(spec))
    assert loaded == spec
    assert hash(loaded) == hash(spec)
    assert {spec: 1}[loaded] == 1
    with pytest.raises(AttributeError):     # frozen
        spec.__setattr__("x", 1)


def test_layer_specs_compare_by_value():
    assert Conv2D(4, 3) == Conv2D(4, 3)
    assert Conv2D(4, 3) != Conv2D(5, 3)
    assert Dense(3) != Dense(4)
    assert MaxPool2D(2) != AvgPool2D(2)
    assert len({ReLU(), ReLU(), Flatten()}) == 2


def test_layer_spec_with_list_argument_is_hashable():
    spec = Conv2D(4, [3, 3])
    hash(spec)
    assert spec == Conv2D(4, (3, 3))


# =========================================== validation on construction

@pytest.mark.parametrize("make, match", [
    (lambda: Conv2D(0, 3), "filters"),
    (lambda: Conv2D(4, 0), "kernel_size"),
    (lambda: Conv2D(4, 2, padding="same"), "odd"),
    (lambda: Conv2D(4, 3, stride=0), "stride"),
    (lambda: Conv2D(4, 3, padding=-1), "padding"),
    (lambda: Conv1D(4, (3, 3)), "kernel_size"),
    (lambda: MaxPool2D(0), "pool_size"),
    (lambda: AvgPool1D(2, stride=0), "stride"),
    (lambda: Dense(0), "units"),
    (lambda: Dense(2.5), "units"),
], ids=["conv-filters", "conv-kernel", "even-same", "stride", "padding",
        "conv1d-tuple", "pool", "pool-stride", "dense", "dense-float"])
def test_layer_specs_validate_on_construction(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# ============================================= normalization layers

def test_normalization_specs_pickle_and_compare():
    for spec in (BatchNorm2D(), BatchNorm1D(momentum=0.2, eps=1e-3),
                 LocalResponseNorm(5, alpha=1e-3, beta=0.5, k=2)):
        assert pickle.loads(pickle.dumps(spec)) == spec
        assert hash(pickle.loads(pickle.dumps(spec))) == hash(spec)
    assert BatchNorm2D() != BatchNorm1D()
    assert BatchNorm2D() == BatchNorm2D(0.1, 1e-5)


@pytest.mark.parametrize("make, match", [
    (lambda L: L.BatchNorm2D(eps=0), "BatchNorm2D: eps"),
    (lambda L: L.BatchNorm2D(eps=-1e-5), "eps"),
    (lambda L: L.BatchNorm1D(eps=float("inf")), "BatchNorm1D: eps"),
    (lambda L: L.BatchNorm2D(momentum=-0.1), "momentum"),
    (lambda L: L.BatchNorm1D(momentum=1.01), "BatchNorm1D: momentum"),
    (lambda L: L.BatchNorm1D(momentum=None), "momentum"),
    (lambda L: L.LocalResponseNorm(0), "LocalResponseNorm: size"),
    (lambda L: L.LocalResponseNorm(2.0), "size"),
    (lambda L: L.LocalResponseNorm(2, alpha=-1.0), "alpha"),
    (lambda L: L.LocalResponseNorm(2, beta=float("nan")), "beta"),
    (lambda L: L.LocalResponseNorm(2, k=0), "k"),
])
def test_normalization_specs_validate_on_construction(make, match):
    with pytest.raises(ValueError, match=match):
        make(L)


@pytest.mark.parametrize("spec_name, shape", [
    ("BatchNorm2D", (3, 8)), ("BatchNorm2D", (12,)), ("BatchNorm1D", (3, 4, 4)),
    ("LocalResponseNorm", (12,))])
def test_normalization_layers_refuse_inputs_of_another_kind(spec_name, shape):
    spec = getattr(L, spec_name)() if spec_name != "LocalResponseNorm" else L.LocalResponseNorm(3)
    with pytest.raises(ValueError, match=spec_name):
        layer_output_shape(spec, shape)
