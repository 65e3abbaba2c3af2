"""Tests of fastcnn.layers: layer specifications pickle, compare and hash
by value, and validate their arguments when constructed."""
import pickle

import pytest

import fastcnn.layers as L
from fastcnn._network import layer_output_shape
from fastcnn.layers import (AvgPool1D, AvgPool2D, Conv1D, Conv2D, Dense,
                            Flatten, MaxPool1D, MaxPool2D, ReLU)
from fastcnn.layers import (GlobalAvgPool1D, GlobalAvgPool2D, GlobalMaxPool1D,
                            GlobalMaxPool2D, L2Pool1D, L2Pool2D)
from fastcnn.layers import BatchNorm1D, BatchNorm2D, LocalResponseNorm


# ================================================ pickle, compare, hash

ALL_SPECS = [Conv2D(4, 3, padding="same"), Conv2D(2, (3, 1), stride=(1, 2), padding=(1, 0)),
             Conv1D(2, 3, stride=2), MaxPool2D(2), MaxPool1D(2, stride=1),
             AvgPool2D((2, 1)), AvgPool1D(3), ReLU(), Flatten(), Dense(5),
             Conv2D(3, 2, padding="same", dilation=(1, 3)), Conv1D(2, 3, dilation=[2])]


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
    (lambda: Conv2D(4, 2, stride=2, padding="same"), "needs stride 1"),
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


# ============================================ L2 and global pooling specs

def test_l2_and_global_pooling_specs_pickle_validate_and_compare():
    specs = [L2Pool2D((2, 3), stride=[1, 2]), L2Pool1D(3), GlobalAvgPool2D(),
             GlobalAvgPool1D(), GlobalMaxPool2D(), GlobalMaxPool1D()]
    for spec in specs:
        assert pickle.loads(pickle.dumps(spec)) == spec
        hash(spec)
    assert L2Pool2D((2, 3), stride=[1, 2]).stride == (1, 2)
    assert GlobalAvgPool2D() != GlobalMaxPool2D() and GlobalAvgPool2D() != GlobalAvgPool1D()
    assert L2Pool2D(2) != AvgPool2D(2)
    with pytest.raises(ValueError, match="L2Pool2D: pool_size"):
        L2Pool2D(0)
    with pytest.raises(ValueError, match="L2Pool1D: stride"):
        L2Pool1D(2, stride=(1, 1))


# ================================= tanh, sigmoid, leaky ReLU, ELU, GELU

from fastcnn.layers import ELU, GELU, LeakyReLU, Sigmoid, Tanh  # noqa: E402


@pytest.mark.parametrize("spec", [Tanh(), Sigmoid(), LeakyReLU(), LeakyReLU(0.2),
                                  LeakyReLU(0), ELU(), ELU(0.5), GELU(), GELU("tanh")],
                         ids=repr)
def test_activation_specs_pickle_compare_and_hash(spec):
    loaded = pickle.loads(pickle.dumps(spec))
    assert loaded == spec and hash(loaded) == hash(spec)
    with pytest.raises(AttributeError):     # frozen
        spec.__setattr__("x", 1)


def test_activation_specs_compare_by_value():
    assert LeakyReLU() == LeakyReLU(0.01) != LeakyReLU(0.1)
    assert ELU() == ELU(1.0) != ELU(2.0)
    assert GELU() == GELU("none") != GELU("tanh")
    assert len({Tanh(), Tanh(), Sigmoid(), GELU()}) == 3


@pytest.mark.parametrize("make, match", [
    (lambda: LeakyReLU(-0.01), "LeakyReLU: negative_slope"),
    (lambda: LeakyReLU(float("nan")), "LeakyReLU: negative_slope"),
    (lambda: LeakyReLU(float("inf")), "LeakyReLU: negative_slope"),
    (lambda: LeakyReLU("0.1"), "LeakyReLU: negative_slope"),
    (lambda: LeakyReLU(True), "LeakyReLU: negative_slope"),
    (lambda: ELU(0), "ELU: alpha"),
    (lambda: ELU(-1.0), "ELU: alpha"),
    (lambda: ELU(float("nan")), "ELU: alpha"),
    (lambda: ELU(float("-inf")), "ELU: alpha"),
    (lambda: ELU(None), "ELU: alpha"),
], ids=["slope-negative", "slope-nan", "slope-inf", "slope-str", "slope-bool",
        "alpha-zero", "alpha-negative", "alpha-nan", "alpha-inf", "alpha-none"])
def test_activation_specs_validate_on_construction(make, match):
    with pytest.raises(ValueError, match=match):
        make()
@pytest.mark.parametrize("make, match", [
    (lambda: Conv2D(4, 3, dilation=0), "Conv2D: dilation"),
    (lambda: Conv2D(4, 3, dilation=(1, 0)), "Conv2D: dilation"),
    (lambda: Conv2D(4, 3, dilation=(1, 2, 3)), "Conv2D: dilation"),
    (lambda: Conv1D(4, 3, dilation=1.5), "Conv1D: dilation"),
    (lambda: Conv1D(4, 3, dilation=True), "Conv1D: dilation"),
    (lambda: Conv1D(4, 3, dilation=(2, 2)), "Conv1D: dilation"),
    (lambda: Conv1D(4, (2,), stride=3, padding="same"), "Conv1D: padding='same'"),
    (lambda: Conv2D(4, (3, 2), stride=(1, 2), padding="same"), "needs stride 1"),
], ids=str)
def test_conv_specs_validate_dilation_and_same_padding(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_same_padding_takes_even_kernels_at_stride_1():
    """As PyTorch's padding='same'; odd kernels keep any stride, as before."""
    assert Conv2D(4, (2, 4), padding="same").padding == "same"
    assert Conv1D(4, 2, padding="same", dilation=3).dilation == 3
    assert Conv2D(4, 3, stride=2, padding="same").stride == 2
    assert Conv2D(4, 3).dilation == 1
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
