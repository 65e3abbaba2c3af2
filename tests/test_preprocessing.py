"""Tests of fastcnn.preprocessing.SeriesStandardScaler against a NumPy
reference, as a scikit-learn transformer, and in a Pipeline with 3-D X."""
import numpy as np
import pytest
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from fastcnn import CNNClassifier
from fastcnn.preprocessing import SeriesStandardScaler


@parametrize_with_checks([SeriesStandardScaler()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("shape", [(5, 3, 40), (6, 25)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_each_series_gets_mean_0_and_std_1(shape, dtype):
    rng = np.random.default_rng(0)
    X = (rng.standard_normal(shape) * rng.uniform(0.1, 10, shape[:-1] + (1,))
         + rng.uniform(-50, 50, shape[:-1] + (1,))).astype(dtype)
    Z = SeriesStandardScaler().fit_transform(X)
    assert Z.shape == X.shape and Z.dtype == dtype
    X64 = X.astype(np.float64)
    want = (X64 - X64.mean(-1, keepdims=True)) / X64.std(-1, keepdims=True)
    np.testing.assert_allclose(Z, want, rtol=1e-4 if dtype == np.float32 else 1e-12,
                               atol=1e-4 if dtype == np.float32 else 1e-12)


def test_switches_and_constant_series():
    X = np.array([[[1.0, 2.0, 3.0], [4.0, 4.0, 4.0]]])
    np.testing.assert_array_equal(SeriesStandardScaler().fit_transform(X)[0, 1], 0.0)
    centred = SeriesStandardScaler(with_std=False).fit_transform(X)
    np.testing.assert_array_equal(centred[0, 0], [-1.0, 0.0, 1.0])
    scaled = SeriesStandardScaler(with_mean=False).fit_transform(X)
    np.testing.assert_allclose(scaled[0, 0], X[0, 0] / np.std(X[0, 0]))
    np.testing.assert_array_equal(scaled[0, 1], X[0, 1])    # std 0: not divided


def test_shape_checks():
    scaler = SeriesStandardScaler().fit(np.zeros((3, 2, 10)))
    with pytest.raises(ValueError, match=r"shape \(2, 11\).*\(2, 10\)"):
        scaler.transform(np.zeros((3, 2, 11)))
    with pytest.raises(ValueError, match="4 dimensions"):
        SeriesStandardScaler().fit(np.zeros((3, 2, 2, 2)))


def test_pipeline_with_3d_series():
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, 60)
    y = np.arange(80) % 2
    # the class is in the shape of the series, not in their level or scale
    X = np.stack([np.sin(2 * np.pi * (2 + 2 * label) * t) for label in y])[:, None]
    X = X * rng.uniform(0.5, 20, (80, 1, 1)) + rng.uniform(-100, 100, (80, 1, 1))
    X = np.concatenate([X, X[:, :, ::-1]], axis=1)          # 2 channels
    model = make_pipeline(SeriesStandardScaler(),
                          CNNClassifier(input_shape=(2, 60), random_state=0))
    model.fit(X[:60], y[:60])
    assert model.score(X[60:], y[60:]) >= 0.9
