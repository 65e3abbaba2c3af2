"""Transformers for Pipelines in front of a CNNClassifier."""
import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

__all__ = ["SeriesStandardScaler"]


class SeriesStandardScaler(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Z-normalise each series on its own, channel by channel.

    Time-series classifiers usually standardise every series by its own
    mean and standard deviation over time (z-normalisation), rather than
    each time point over the training set as ``StandardScaler`` does (which
    also rejects 3-D X). For X of shape ``(n_cases, n_channels,
    n_timepoints)`` each ``X[i, c, :]`` gets mean 0 and standard deviation
    1; 2-D X ``(n_cases, n_timepoints)`` is one channel per case. The shape
    of X is kept. Nothing is learned from the training data, so ``fit``
    only records the shape.

    Parameters
    ----------
    with_mean : bool, default=True
        Subtract each series' mean.
    with_std : bool, default=True
        Divide by each series' standard deviation; a constant series
        (standard deviation 0) is not divided.

    Attributes
    ----------
    n_features_in_ : int
        Values per case (``n_channels * n_timepoints``).
    series_shape_ : tuple
        Shape of one case seen in ``fit``.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from fastcnn import CNNClassifier
    >>> from fastcnn.preprocessing import SeriesStandardScaler
    >>> model = make_pipeline(SeriesStandardScaler(),
    ...                       CNNClassifier(input_shape=(3, 100)))  # 3-D X
    """

    _parameter_constraints = {"with_mean": ["boolean"], "with_std": ["boolean"]}

    def __init__(self, with_mean=True, with_std=True):
        self.with_mean = with_mean
        self.with_std = with_std

    def _check(self, X, reset):
        X = check_array(X, allow_nd=True, dtype=(np.float64, np.float32),
                        estimator=self, input_name="X")
        if X.ndim not in (2, 3):
            raise ValueError(
                "X must be (n_cases, n_timepoints) or (n_cases, n_channels, "
                f"n_timepoints), got {X.ndim} dimensions")
        if not reset and X.shape[1:] != self.series_shape_:
            raise ValueError(
                f"X has {np.prod(X.shape[1:])} features, but {type(self).__name__} "
                f"is expecting {self.n_features_in_} features as input: cases of "
                f"shape {X.shape[1:]}, fitted on cases of shape {self.series_shape_}")
        validate_data(self, X.reshape(len(X), -1), reset=reset, skip_check_array=True)
        if reset:
            self.series_shape_ = X.shape[1:]
        return X

    def fit(self, X, y=None):
        """Record the shape of the cases; nothing else is learned."""
        self._validate_params()
        self._check(X, reset=True)
        return self

    def transform(self, X):
        """Each series minus its mean, divided by its standard deviation."""
        check_is_fitted(self)
        X = self._check(X, reset=False)
        out = np.array(X, dtype=X.dtype, order="C")
        if self.with_mean:
            out -= out.mean(axis=-1, keepdims=True)
        if self.with_std:
            # a constant series keeps its scale (0 after its mean is taken)
            std = X.std(axis=-1, keepdims=True)
            np.divide(out, std, out=out, where=std > 0)
        return out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = True
        return tags
