"""Helpers of the tests of CNNClassifier (test_classifier.py and the tests of
the modules it delegates to): a small, fast configuration, and a fit that
returns its probabilities. The digits they fit on are the fixtures
``digits`` and ``small_digits`` of conftest.py."""
from fastcnn import CNNClassifier

#: a small, fast configuration; input_shape is added where X is flat
SMALL = dict(filters=(4,), hidden_layer_sizes=(16,), max_iter=3, random_state=0)

#: scikit-learn's checks that the estimators of parametrize_with_checks
#: (float32, the default dtype) are expected to fail, and why
EXPECTED_FAILED_CHECKS = {
    "check_sample_weight_equivalence_on_dense_data": (
        "float32 rounding: the repeated data set has other rows in the batch, "
        "so the batch sums run in another order and, over 50 epochs of Adam, "
        "the predictions differ by about 1e-6 relative, above the check's "
        "rtol=1e-7; with dtype='float64' the check passes "
        "(tests/test_weights.py runs it)"),
}


def fit_proba(X, y, **params):
    """CNNClassifier(**SMALL) with ``params`` fitted on X, y; and its
    predict_proba(X)."""
    clf = CNNClassifier(**{**SMALL, **params}).fit(X, y)
    return clf, clf.predict_proba(X)
