"""CNNClassifier: a scikit-learn classifier that trains a convolutional network."""
import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.utils.multiclass import _check_partial_fit_first_call

from . import functional as F
from ._base import ATTRIBUTES_DOC, PARAMETERS_DOC, BaseCNN, InputShapeWarning
from ._labels import encode_labels, labels_1d
from ._parameters import ClassWeight, NoneOr

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
    class_weight : dict, 'balanced' or None, default=None
        Weights of the classes, ``{{class_label: weight}}`` (classes not
        named weigh 1), multiplying ``sample_weight``. 'balanced' weighs
        each class by ``n_samples / (n_classes * np.bincount(y))`` over the
        y given to ``fit``, as :func:`sklearn.utils.class_weight.compute_sample_weight`
        does; ``partial_fit`` sees only a part of the data, so it refuses
        'balanced' (as SGDClassifier does): compute the weights once with
        :func:`sklearn.utils.class_weight.compute_class_weight` over a
        sample of all the labels and pass them as a dict.

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

    # BaseCNN's parameters and class_weight: scikit-learn reads an
    # estimator's parameters from its __init__'s signature, so they are
    # listed again here (tests/test_weights.py checks the two agree).
    def __init__(self, filters=(16, 32), kernel_size=3, pool_size=2,
                 padding="same", hidden_layer_sizes=(128,), activation="relu",
                 batch_norm=False, dropout=0.0, global_pool="auto", layers=None,
                 solver="adam", learning_rate="constant",
                 learning_rate_init=0.003, power_t=0.5, momentum=0.9,
                 nesterovs_momentum=True, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8, batch_size="auto", max_iter=200, alpha=0.0001,
                 shuffle=True, random_state=None, tol=1e-3,
                 early_stopping="auto", validation_fraction=0.1,
                 n_iter_no_change=5, warm_start=False, verbose=0,
                 n_threads=None, dtype="float32", input_shape=None,
                 class_weight=None):
        super().__init__(
            filters=filters, kernel_size=kernel_size, pool_size=pool_size,
            padding=padding, hidden_layer_sizes=hidden_layer_sizes,
            activation=activation, batch_norm=batch_norm, dropout=dropout,
            global_pool=global_pool, layers=layers, solver=solver,
            learning_rate=learning_rate, learning_rate_init=learning_rate_init,
            power_t=power_t, momentum=momentum,
            nesterovs_momentum=nesterovs_momentum, beta_1=beta_1, beta_2=beta_2,
            epsilon=epsilon, batch_size=batch_size, max_iter=max_iter,
            alpha=alpha, shuffle=shuffle, random_state=random_state, tol=tol,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change, warm_start=warm_start,
            verbose=verbose, n_threads=n_threads, dtype=dtype,
            input_shape=input_shape)
        self.class_weight = class_weight

    _parameter_constraints = {**BaseCNN._parameter_constraints,
                              "class_weight": NoneOr(ClassWeight())}

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over X, y, continuing from the current weights.

        Parameters
        ----------
        X, y
            As for :meth:`fit`.
        classes : array-like of shape (n_classes,), default=None
            Every class of the whole problem; required on the first call,
            ignored afterwards.
        sample_weight : array-like of shape (n_samples,), default=None
            As for :meth:`fit`.

        Returns
        -------
        self
        """
        if isinstance(self.class_weight, str) and self.class_weight == "balanced":
            raise ValueError(
                "class_weight 'balanced' is not supported for partial_fit, "
                "which sees only part of the data: compute the weights with "
                "sklearn.utils.class_weight.compute_class_weight('balanced', "
                "classes=classes, y=y) over all the labels (or a large enough "
                "sample of them) and pass them as class_weight=dict(zip(classes, "
                "weights))")
        return self._partial_fit(X, y, sample_weight,
                                 _check_partial_fit_first_call(self, classes))

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

    def _training_weights(self, sample_weight, y_index):
        """The validated sample_weight times the weight of each sample's
        class (class_weight); None when neither is given."""
        weights = super()._training_weights(sample_weight, y_index)
        if self.class_weight is None:
            return weights
        per_sample = self._class_weights(y_index)[y_index]
        if weights is not None:
            per_sample *= weights
        if not per_sample.any():
            raise ValueError(
                "class_weight gives every sample of y weight zero (with "
                "sample_weight): there is nothing to fit")
        return per_sample

    def _class_weights(self, y_index):
        """The weight of each class of ``classes_``, by class_weight."""
        # imported here: sklearn.utils.class_weight is only needed with
        # class_weight
        from sklearn.utils.class_weight import compute_class_weight
        if self.class_weight == "balanced":
            return compute_class_weight("balanced", classes=np.arange(len(self.classes_)),
                                        y=y_index)
        labels = self.classes_.tolist()
        unknown = [key for key in self.class_weight if key not in labels]
        if unknown:
            raise ValueError(
                f"class_weight has weights for {unknown!r}, which are not "
                f"classes of y (classes_ = {labels!r})")
        return np.array([float(self.class_weight.get(label, 1.0)) for label in labels])

    def _loss(self, scores, y_index, out, sample_weight):
        return F.softmax_cross_entropy(scores, y_index, out=out,
                                       sample_weight=sample_weight)

    def _validation_score(self, X, y_index, n_threads, sample_weight):
        # accuracy_score's weighting: sum of the weights of the right
        # predictions over the sum of the weights
        right = self._network_outputs(X, n_threads).argmax(axis=1) == y_index
        return float(np.average(right, weights=sample_weight))

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
