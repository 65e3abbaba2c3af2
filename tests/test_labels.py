"""Tests of fastcnn._labels: the encoding of class labels as indices, the
validation of y, and labels of any type through the estimator (classes_,
predictions and the columns of predict_proba follow them)."""
import numpy as np
import pytest

from fastcnn import CNNClassifier
from fastcnn._labels import encode_by_counting
from _helpers.estimators import SMALL, fit_proba

# The estimator's fits below stop at a deliberately small max_iter.
pytestmark = pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning")


# ================================================= encoding by counting

@pytest.mark.parametrize("labels", [
    np.array([0, 1, 2, 1, 0, 2]),                       # their own indices
    np.array([3, 7, 3, 5, 7, 7], dtype=np.int32),       # gaps
    np.array([-4, 2, -1, -4, 2, 0], dtype=np.int16),    # negative
    np.array([1, 0, 1, 1], dtype=np.uint8),
    np.array([2**62, 2**62 + 2, 2**62], dtype=np.uint64),
    np.array([5, 1, 1, 5, 9], dtype=np.int64),
    np.array([0, 1000, 0, 1000]),                       # range wider than y: sorted
    np.array([0, 2, 2, 0]),                             # 0 to K - 1 with a gap
])
def test_integer_labels_encoded_as_by_unique(labels):
    classes, index = np.unique(labels, return_inverse=True)
    encoded = encode_by_counting(labels)
    if encoded is None:    # left to np.unique
        assert labels.max() - labels.min() > len(labels)
        return
    got_classes, got_index = encoded
    np.testing.assert_array_equal(got_classes, classes)
    assert got_classes.dtype == labels.dtype
    np.testing.assert_array_equal(got_index, index)
    assert got_index.dtype in (np.int32, np.intp)


def test_labels_that_are_their_own_indices_are_not_copied():
    labels = np.array([2, 0, 1, 1, 0, 2], dtype=np.intp)
    classes, index = encode_by_counting(labels)
    assert np.shares_memory(index, labels)
    np.testing.assert_array_equal(classes, [0, 1, 2])
    # non-integer labels are not counted
    assert encode_by_counting(labels.astype(np.float64)) is None
    assert encode_by_counting(np.array(["a", "b"])) is None


# ================================================== targets of any type

@pytest.mark.parametrize("kind", ["str", "bool", "int32", "float", "object"])
def test_label_types(small_digits, kind):
    X, y = small_digits
    y3 = y % 3
    labels = {
        "str": np.array(["b", "c", "a"])[y3],
        "bool": y3 > 0,
        "int32": y3.astype(np.int32),
        "float": y3.astype(np.float64),
        "object": np.array(["b", "c", "a"], dtype=object)[y3],
    }[kind]
    clf = CNNClassifier(input_shape=(1, 8, 8), **SMALL).fit(X, labels)
    np.testing.assert_array_equal(clf.classes_, np.unique(labels))
    assert clf.classes_.dtype == np.unique(labels).dtype
    pred = clf.predict(X)
    assert pred.dtype == clf.classes_.dtype
    assert set(pred.tolist()) <= set(clf.classes_.tolist())
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), len(clf.classes_))
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    # columns follow classes_: predict is the argmax column
    np.testing.assert_array_equal(pred, clf.classes_[proba.argmax(axis=1)])
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(proba),
                               rtol=1e-5, atol=1e-6)


def test_string_labels_same_model_as_integer_labels(small_digits):
    X, y = small_digits
    names = np.array([f"digit{d}" for d in range(10)])
    _, p_int = fit_proba(X, y, input_shape=(1, 8, 8))
    clf, p_str = fit_proba(X, names[y], input_shape=(1, 8, 8))
    # sorted string classes happen to follow the digits' order here
    np.testing.assert_array_equal(clf.classes_, names)
    np.testing.assert_array_equal(p_str, p_int)


# ====================================================== invalid targets

def test_y_of_wrong_length(small_digits, no_training):
    X, y = small_digits
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        CNNClassifier(input_shape=(1, 8, 8), **SMALL).fit(X, y[:-1])


def test_one_class(small_digits, no_training):
    X, y = small_digits
    with pytest.raises(ValueError, match="only one class"):
        CNNClassifier(input_shape=(1, 8, 8), **SMALL).fit(X, np.full(len(X), 7))
