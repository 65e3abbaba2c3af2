"""Tests of fastcnn._training's profile of a fit (fastcnn.profile_training).
The loop's behaviour is tested through the estimator in test_classifier.py,
test_interrupt.py and test_threads.py."""
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning

import fastcnn
from fastcnn import CNNClassifier

PARAMS = dict(input_shape=(1, 8, 8), filters=(4,), hidden_layer_sizes=(16,),
              batch_size=40, random_state=0)


@pytest.fixture(scope="module")
def data():
    X, y = load_digits(return_X_y=True)
    return X[:120] / 16.0, y[:120]


def test_profile_times_every_part_of_every_step(data):
    X, y = data
    clf = CNNClassifier(**PARAMS)
    with fastcnn.profile_training() as profile:
        clf.partial_fit(X, y, classes=np.arange(10))
    assert profile.steps == 3      # 120 samples in batches of 40
    layers = [(layer.position, layer.name) for layer in clf.network_.layers]
    expected = {key + (which,) for key in layers for which in ("forward", "backward")}
    expected |= {"batch copy", "loss", "optimizer"}
    assert set(profile.seconds) == expected
    assert all(seconds >= 0 for seconds in profile.seconds.values())
    # the network does not keep timing after the block
    assert clf.network_.profile is None


def test_fits_outside_the_block_are_not_profiled(data):
    X, y = data
    clf = CNNClassifier(**PARAMS)
    with fastcnn.profile_training() as profile:
        clf.partial_fit(X, y, classes=np.arange(10))
    steps, seconds = profile.steps, dict(profile.seconds)
    clf.partial_fit(X, y)
    assert profile.steps == steps and profile.seconds == seconds


def test_profiling_changes_no_result(data):
    X, y = data
    plain = CNNClassifier(**PARAMS, max_iter=2, early_stopping=False)
    with pytest.warns(ConvergenceWarning):
        plain.fit(X, y)
    profiled = CNNClassifier(**PARAMS, max_iter=2, early_stopping=False)
    with fastcnn.profile_training(), pytest.warns(ConvergenceWarning):
        profiled.fit(X, y)
    np.testing.assert_array_equal(plain.network_.params, profiled.network_.params)
    assert plain.loss_curve_ == profiled.loss_curve_
