"""Tests of fastcnn._labels: the encoding of class labels as indices."""
import numpy as np
import pytest

from fastcnn._labels import encode_by_counting


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
