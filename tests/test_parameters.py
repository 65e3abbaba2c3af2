"""Tests of fastcnn._parameters: CNNClassifier.fit refuses every invalid
hyperparameter with a ValueError naming it, before any training."""
import re

import numpy as np
import pytest

from fastcnn import CNNClassifier
from _helpers.estimators import SMALL


BAD_PARAMS = [
    ("solver", "lbfgs", "solver"),
    ("learning_rate_init", 0, "learning_rate_init"),
    ("learning_rate_init", -1, "learning_rate_init"),
    ("momentum", 2, "momentum"),
    ("batch_size", 0, "batch_size"),
    ("batch_size", "big", "batch_size"),
    ("max_iter", 0, "max_iter"),
    ("alpha", -1, "alpha"),
    ("validation_fraction", 1.0, "validation_fraction"),
    ("n_iter_no_change", 0, "n_iter_no_change"),
    ("dtype", "float16", "dtype"),
    ("padding", "full", "padding"),
    ("filters", (0,), "filters"),
    ("kernel_size", 0, "kernel_size"),
    ("layers", [object()], re.escape("layers[0]")),
    ("layers", "conv", "layers"),
    ("n_threads", 0, "n_threads"),
    ("input_shape", (0, 8, 8), "input_shape"),
    ("pool_size", 0, "pool_size"),
    ("hidden_layer_sizes", (0,), "hidden_layer_sizes"),
    ("activation", "softmax", "activation"),
    ("batch_norm", "yes", "batch_norm"),
    ("dropout", 1.0, "dropout"),
    ("dropout", -0.1, "dropout"),
    ("global_pool", "sum", "global_pool"),
    ("beta_1", 1.0, "beta_1"),
    ("beta_2", -0.1, "beta_2"),
    ("epsilon", 0, "epsilon"),
    ("tol", -1, "tol"),
    ("verbose", -1, "verbose"),
    ("shuffle", "yes", "shuffle"),
    ("early_stopping", "yes", "early_stopping"),
    ("early_stopping", None, "early_stopping"),
    ("max_iter", 2.0, "max_iter"),
    ("learning_rate_init", np.nan, "learning_rate_init"),
]


@pytest.mark.parametrize("name, value, match", BAD_PARAMS,
                         ids=[f"{n}={v!r}" for n, v, _ in BAD_PARAMS])
def test_bad_hyperparameter(small_digits, no_training, name, value, match):
    X, y = small_digits
    clf = CNNClassifier(**{**SMALL, "input_shape": (1, 8, 8), name: value})
    with pytest.raises(ValueError, match=match):
        clf.fit(X, y)
    assert not hasattr(clf, "network_")


@pytest.mark.parametrize("name", ["alpha", "learning_rate_init"])
def test_infinite_hyperparameter_rejected_before_training(small_digits, no_training, name):
    X, y = small_digits
    with pytest.raises(ValueError, match=name):
        CNNClassifier(**{**SMALL, "input_shape": (1, 8, 8), name: np.inf}).fit(X, y)
