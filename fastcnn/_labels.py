"""Class labels: validation, and encoding as indices into ``classes_``."""
import numpy as np
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length, column_or_1d


def index_dtype(n):
    """int32 for indices below n when they fit (half the memory of intp for
    a large training set; the kernels take both), else intp."""
    return np.int32 if n <= np.iinfo(np.int32).max else np.intp


def encode_by_counting(y):
    """``np.unique(y, return_inverse=True)`` for integer labels spanning no
    more values than there are labels, by counting instead of sorting: linear
    time, and no temporary copies of y, whose freed memory a sort leaves in
    the process's heap. Labels 0 to K - 1, every one present, are their
    own indices: y itself is returned, not copied. None for any other y."""
    if y.dtype.kind not in "iu" or len(y) == 0:
        return None
    low, high = int(y.min()), int(y.max())
    if high - low > len(y) or high > np.iinfo(np.intp).max:
        return None
    if low == 0 and y.dtype == np.intp:
        present = np.bincount(y, minlength=high + 1) > 0
        if present.all():
            return np.arange(high + 1, dtype=y.dtype), np.ascontiguousarray(y)
    # In the index type, y and low may wrap around, but their difference,
    # between 0 and len(y), comes out right (arithmetic modulo 2**bits).
    y_index = np.subtract(y, y.dtype.type(low), dtype=index_dtype(len(y) + 1),
                          casting="unsafe")
    present = np.bincount(y_index, minlength=high - low + 1) > 0
    classes = (np.flatnonzero(present) + low).astype(y.dtype)
    position = np.cumsum(present, dtype=y_index.dtype) - 1
    np.take(position, y_index, out=y_index)
    return classes, y_index


def check_y_passed(y, estimator_name):
    if y is None:
        raise ValueError(
            f"{estimator_name} requires y to be passed, but the target y is None")


def labels_1d(y, X):
    """y as a 1-D array of one label per sample of X."""
    y = column_or_1d(y, warn=True)
    check_consistent_length(X, y)
    return y


def encode_labels(y, classes=None, check_targets=True):
    """(classes, y_index): the classes and each label's index among them
    (int32 or intp: the kernels take both).

    Without ``classes``, those of y, at least 2, from at least 2 samples.
    With ``classes``, every label of y must be one of them; the check of
    y's type is skipped when ``check_targets`` is False (later partial_fit
    calls: it costs more than a small batch's training step)."""
    if classes is not None:
        if check_targets:
            check_classification_targets(y)
        return classes, _index_among(y, classes)
    counted = encode_by_counting(y)
    if counted is None:
        # labels encoded by counting are integers: always valid classes
        check_classification_targets(y)
    if len(y) < 2:
        raise ValueError(
            f"n_samples = {len(y)}: at least 2 samples are needed to train")
    classes, y_index = (np.unique(y, return_inverse=True)
                        if counted is None else counted)
    if len(classes) < 2:
        raise ValueError(
            f"y has only one class ({classes[0]!r}); a classifier needs "
            "at least 2 classes")
    return classes, y_index


def _index_among(y, classes):
    """Each label's index in the sorted ``classes``; a ValueError names the
    labels that are not among them."""
    y_index = np.searchsorted(classes, y)
    y_index[y_index >= len(classes)] = 0
    unknown = classes[y_index] != y
    if np.any(unknown):
        raise ValueError(
            f"y contains labels not in classes: {np.unique(y[unknown])}")
    return y_index
