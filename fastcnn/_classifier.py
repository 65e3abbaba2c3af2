"""CNNClassifier: a scikit-learn classifier that trains a convolutional network."""
import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.utils.multiclass import _check_partial_fit_first_call

from . import functional as F
from ._base import ATTRIBUTES_DOC, PARAMETERS_DOC, BaseCNN, InputShapeWarning
from ._labels import encode_labels, labels_1d

__all__ = ["CNNClassifier", "InputShapeWarning"]


class CNNClassifier(ClassifierMixin, BaseCNN):
    __doc__ = f"""Convolutional neural network classifier.

    Trains ``INPUT -> [CONV -> ACTIVATION -> POOL] * M -> [DENSE ->
    ACTIVATION] * K -> DENSE`` with softmax cross-entropy, on all cores through fastcnn's
    OpenMP kernels. The hidden layers come either from the simple parameters
    (``filters``, ``kernel_size``, ``pool_size``, ``padding``,
    ``hidden_layer_sizes``, ``activation``, ``batch_norm``, ``dropout``,
    ``global_pool``) or from ``layers``, a list of
    :mod:`fastcnn.layers` specifications; the output layer (one unit per
    class) is always added. Results are bitwise identical for any number of
    threads given the same ``random_state``.

    The defaults are chosen to fit small data sets in well under a second
    and large ones without training long past their best: where
    MLPClassifier's training settings (batch 200, tol 1e-4,
    n_iter_no_change 10) run several times as many epochs on the digits for
    the same test accuracy, and on Fashion-MNIST the training loss keeps
    falling long after the test accuracy has peaked.
    ``benchmarks/bench_defaults.py`` measures them against those settings.

    Parameters
    ----------
{PARAMETERS_DOC}

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
{ATTRIBUTES_DOC}

    With softmax outputs, ``n_outputs_`` is the number of classes, two for a
    binary problem (MLPClassifier has one logistic unit there), and
    ``out_activation_`` is ``'softmax'``.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from fastcnn import CNNClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = CNNClassifier(input_shape=(1, 8, 8), random_state=0).fit(X / 16, y)
    """

    OUT_ACTIVATION = "softmax"

    def partial_fit(self, X, y, classes=None):
        """One epoch over X, y, continuing from the current weights.

        Parameters
        ----------
        X, y
            As for :meth:`fit`.
        classes : array-like of shape (n_classes,), default=None
            Every class of the whole problem; required on the first call,
            ignored afterwards.

        Returns
        -------
        self
        """
        return self._partial_fit(X, y, _check_partial_fit_first_call(self, classes))

    # ----------------------------------------------------------- hooks

    def _encode_targets(self, y, X, dtype, reset, incremental):
        """y as indices into ``classes_``: the classes of y, which fit sets
        (a warm start keeps them, and y must have the same), or those
        partial_fit was given."""
        y = labels_1d(y, X)
        if incremental:
            return encode_labels(y, self.classes_, check_targets=reset)[1]
        classes, y_index = encode_labels(y)
        if not reset and (len(classes) != len(self.classes_)
                          or np.any(classes != self.classes_)):
            raise ValueError(
                "warm_start can only be used where y has the same classes as "
                f"in the previous call to fit. Previously got {self.classes_}, "
                f"y has {classes}")
        self.classes_ = classes
        return y_index

    def _output_width(self, y_index):
        return len(self.classes_)

    def _loss(self, scores, y_index, out):
        return F.softmax_cross_entropy(scores, y_index, out=out)

    def _validation_score(self, X, y_index, n_threads):
        return self._accuracy(X, y_index, n_threads)

    def _accuracy(self, X, y_index, n_threads):
        return float(np.mean(self._network_outputs(X, n_threads).argmax(axis=1) == y_index))

    def _stratify(self, y_index):
        """Stratify the held-out split by class when every class has two
        samples."""
        return y_index if np.bincount(y_index).min() >= 2 else None

    # -------------------------------------------------------- predict

    def predict_log_proba(self, X):
        """Log of the class probabilities.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            As for :meth:`fit`.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
        """
        return F.log_softmax(self._predict_outputs(X))

    def predict_proba(self, X):
        """Class probabilities (softmax of the network's scores).

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Columns in the order of ``classes_``.
        """
        return F.softmax(self._predict_outputs(X))

    def predict(self, X):
        """Predicted class of each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)

        Returns
        -------
        y : ndarray of shape (n_samples,)
        """
        scores = self._predict_outputs(X)
        return self.classes_[scores.argmax(axis=1)]
