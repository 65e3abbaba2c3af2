"""CNNRegressor: a scikit-learn regressor that trains a convolutional network."""
import numpy as np
from sklearn.base import RegressorMixin
from sklearn.utils.validation import check_array, check_consistent_length

from . import functional as F
from ._base import ATTRIBUTES_DOC, PARAMETERS_DOC, BaseCNN

__all__ = ["CNNRegressor"]


def _numeric_targets(y, estimator_name):
    """y as a float64 array of 1 or 2 dimensions, with a ValueError naming y
    for anything that is not real numbers (strings, NaN, inf)."""
    given = np.asarray(y)
    try:
        if given.dtype.kind in "USVcMm":   # text, bytes, complex, dates
            raise TypeError
        y = given.astype(np.float64)       # also object arrays of numbers
    except (TypeError, ValueError):
        raise ValueError(
            f"{estimator_name} needs numeric targets y (real numbers), got "
            f"dtype {given.dtype}; for class labels use CNNClassifier") from None
    if y.ndim not in (1, 2) or (y.ndim == 2 and y.shape[1] == 0):
        raise ValueError(
            f"y must have shape (n_samples,) or (n_samples, n_outputs), got "
            f"shape {y.shape}")
    return check_array(y, ensure_2d=False, dtype=np.float64, input_name="y")


class CNNRegressor(RegressorMixin, BaseCNN):
    __doc__ = f"""Convolutional neural network regressor.

    Trains ``INPUT -> [CONV -> ACTIVATION -> POOL] * M -> [DENSE ->
    ACTIVATION] * K -> DENSE`` with an identity output and the squared loss,
    on all cores through fastcnn's OpenMP kernels: the same network and
    training as :class:`CNNClassifier` (the same parameters), with one
    output unit per target.

    The loss of a batch of N samples with targets ``y`` of K outputs is
    ``sum_n sum_k (prediction[n, k] - y[n, k])^2 / (2N)``, the loss whose
    gradient MLPRegressor's backpropagation follows (halved, summed over the
    outputs; MLPRegressor's reported ``loss_curve_`` also divides by K, so
    the two agree for one output), plus the L2 penalty; PyTorch writes it
    ``0.5 * mse_loss(prediction, y, reduction='sum') / N``; with
    ``sample_weight``, the samples' terms are weighted and divided by the
    batch's sum of weights instead of N. ``score`` is
    R^2 (:func:`sklearn.metrics.r2_score`, averaged over the outputs), the
    score early stopping follows too. Predictions are float64, of the
    shape of y in ``fit``: ``(n_samples,)`` or ``(n_samples, n_outputs)``.
    Targets are used as given: for targets far from unit scale, wrap the
    estimator in a ``TransformedTargetRegressor`` with a ``StandardScaler``.

    Parameters
    ----------
{PARAMETERS_DOC}

    Attributes
    ----------
{ATTRIBUTES_DOC}

    ``n_outputs_`` is the number of targets (columns of y) and
    ``out_activation_`` is ``'identity'``.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from fastcnn import CNNRegressor
    >>> X, _ = load_digits(return_X_y=True)
    >>> y = X[:, 27:29].mean(axis=1) / 16       # the brightness at the centre
    >>> reg = CNNRegressor(input_shape=(1, 8, 8), max_iter=5, random_state=0)
    >>> reg = reg.fit(X / 16, y)
    """

    OUT_ACTIVATION = "identity"

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over X, y, continuing from the current weights (from new
        ones on the first call).

        Parameters
        ----------
        X, y
            As for :meth:`fit`; y with as many outputs as before.
        sample_weight : array-like of shape (n_samples,), default=None
            As for :meth:`fit`.

        Returns
        -------
        self
        """
        return self._partial_fit(X, y, sample_weight, not hasattr(self, "network_"))

    # ----------------------------------------------------------- hooks

    def _encode_targets(self, y, X, dtype, reset, incremental):
        """y as a C-contiguous (n_samples, n_outputs) array of ``dtype``; a
        warm start or a later partial_fit needs as many outputs as the
        network has. predict follows the dimensions of the latest y."""
        name = type(self).__name__
        y = _numeric_targets(y, name)
        check_consistent_length(X, y)
        with np.errstate(over="ignore"):    # refused below, by name
            targets = np.ascontiguousarray(y.reshape(len(y), -1), dtype=dtype)
        if not np.isfinite(targets).all():
            raise ValueError(
                f"y has values too large for dtype {np.dtype(dtype).name} "
                "(the dtype parameter); scale the targets")
        if not reset and targets.shape[1] != self.n_outputs_:
            raise ValueError(
                f"y has {targets.shape[1]} outputs, but {name} was fitted with "
                f"{self.n_outputs_} (n_outputs_); warm_start and partial_fit "
                "need the same number")
        self._y_ndim = y.ndim
        return targets

    def _output_width(self, targets):
        return targets.shape[1]

    def _loss(self, predictions, targets, out, sample_weight):
        return F.squared_error(predictions, targets, out=out,
                               sample_weight=sample_weight)

    def _validation_score(self, X, targets, n_threads, sample_weight):
        # imported here, as RegressorMixin.score does: sklearn.metrics costs
        # import time that a fit without early stopping never needs
        from sklearn.metrics import r2_score
        predictions = self._network_outputs(X, n_threads)
        return float(r2_score(targets.astype(np.float64),
                              predictions.astype(np.float64),
                              sample_weight=sample_weight))

    def _stratify(self, targets):
        return None

    # -------------------------------------------------------- predict

    def predict(self, X):
        """Predicted targets.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            As for :meth:`fit`.

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            float64, of the dimensions of y in ``fit``.
        """
        predictions = self._predict_outputs(X).astype(np.float64)
        return predictions.ravel() if self._y_ndim == 1 else predictions

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
