"""Helpers of the tests of CNNClassifier (test_classifier.py and the tests of
the modules it delegates to): a small, fast configuration, and a fit that
returns its probabilities. The digits they fit on are the fixtures
``digits`` and ``small_digits`` of conftest.py."""
from fastcnn import CNNClassifier

#: a small, fast configuration; input_shape is added where X is flat
SMALL = dict(filters=(4,), hidden_layer_sizes=(16,), max_iter=3, random_state=0)


def fit_proba(X, y, **params):
    """CNNClassifier(**SMALL) with ``params`` fitted on X, y; and its
    predict_proba(X)."""
    clf = CNNClassifier(**{**SMALL, **params}).fit(X, y)
    return clf, clf.predict_proba(X)
