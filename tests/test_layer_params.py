"""Tests of fastcnn._layer_params: the fields of the specifications in
``layers`` as parameters (``layers__0__filters``,
``layers__3__layers__0__filters``) of get_params, set_params, clone,
Pipelines and GridSearchCV."""
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from fastcnn import CNNClassifier
from fastcnn.layers import Conv2D, Dense, MaxPool2D, ReLU, Residual, Tanh

pytestmark = pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning")


def make_layers(filters=4, inner=4):
    return [Conv2D(filters, 3, padding=1), ReLU(), MaxPool2D(2),
            Residual([Conv2D(inner, 3, padding=1), ReLU()], shortcut=[Conv2D(inner, 1)]),
            ReLU()]


def test_deep_params_list_every_layer_and_field():
    layers = make_layers()
    params = CNNClassifier(layers=layers).get_params(deep=True)
    nested = {key: value for key, value in params.items() if key.startswith("layers__")}
    inner, shortcut = Conv2D(4, 3, padding=1), Conv2D(4, 1)
    assert nested == {
        "layers__0": layers[0], "layers__0__filters": 4, "layers__0__kernel_size": 3,
        "layers__0__stride": 1, "layers__0__padding": 1, "layers__0__dilation": 1,
        "layers__1": ReLU(),
        "layers__2": MaxPool2D(2), "layers__2__pool_size": 2, "layers__2__stride": None,
        "layers__3": layers[3],
        "layers__3__layers": (inner, ReLU()),
        "layers__3__layers__0": inner, "layers__3__layers__0__filters": 4,
        "layers__3__layers__0__kernel_size": 3, "layers__3__layers__0__stride": 1,
        "layers__3__layers__0__padding": 1, "layers__3__layers__0__dilation": 1,
        "layers__3__layers__1": ReLU(),
        "layers__3__shortcut": (shortcut,),
        "layers__3__shortcut__0": shortcut, "layers__3__shortcut__0__filters": 4,
        "layers__3__shortcut__0__kernel_size": 1, "layers__3__shortcut__0__stride": 1,
        "layers__3__shortcut__0__padding": 0, "layers__3__shortcut__0__dilation": 1,
        "layers__4": ReLU(),
    }
    assert params["layers"] is layers
    shallow = CNNClassifier(layers=layers).get_params(deep=False)
    assert not any(key.startswith("layers__") for key in shallow)
    assert not any(key.startswith("layers__") for key in CNNClassifier().get_params())


def test_set_params_replaces_specs_in_a_new_list():
    layers = make_layers()
    original = list(layers)
    clf = CNNClassifier(layers=layers)
    assert clf.set_params(layers__0__filters=8, layers__3__layers__0__filters=6,
                          layers__3__shortcut__0__stride=1, layers__1=Tanh()) is clf
    assert clf.layers == [Conv2D(8, 3, padding=1), Tanh(), MaxPool2D(2),
                          Residual([Conv2D(6, 3, padding=1), ReLU()],
                                   shortcut=[Conv2D(4, 1)]),
                          ReLU()]
    assert type(clf.layers) is list
    # the user's list and its specifications are as they were
    assert layers == original and all(a is b for a, b in zip(layers, original))
    assert clf.get_params()["layers__3__layers__0__filters"] == 6


def test_a_tuple_of_layers_becomes_a_list():
    clf = CNNClassifier(layers=tuple(make_layers())).set_params(layers__0__filters=2)
    assert clf.layers == make_layers(filters=2)


def test_layers_given_with_its_fields_is_set_first():
    clf = CNNClassifier(layers=make_layers())
    clf.set_params(layers__0__filters=5, layers=[Conv2D(2, 3), ReLU()])
    assert clf.layers == [Conv2D(5, 3), ReLU()]


def test_the_set_layers_build_the_fitted_network(small_digits):
    X, y = small_digits
    clf = CNNClassifier(layers=make_layers(), input_shape=(1, 8, 8), max_iter=1,
                        random_state=0)
    clf.set_params(layers__0__filters=7, layers__3__layers__0__filters=5,
                   layers__3__shortcut__0__filters=5).fit(X, y)
    # conv 7, then the block's conv 5 and its 1x1 shortcut to 5 channels
    assert [w.shape[0] for w in clf.coefs_[:3]] == [7, 5, 5]


def test_clone_gives_equal_params_and_its_own_list():
    clf = CNNClassifier(layers=make_layers()).set_params(layers__0__filters=8)
    copy = clone(clf)
    assert copy.get_params() == clf.get_params()
    assert copy.layers == clf.layers and copy.layers is not clf.layers
    copy.set_params(layers__0__filters=3)
    assert clf.layers[0].filters == 8


def test_grid_search_over_a_layer_field(small_digits):
    X, y = small_digits
    base = CNNClassifier(layers=make_layers(), input_shape=(1, 8, 8), max_iter=3,
                         random_state=0)
    grid = {"layers__0__filters": [2, 8], "layers__3__layers__0__filters": [3],
            "layers__3__shortcut__0__filters": [3]}
    cv = KFold(3)
    search = GridSearchCV(base, grid, cv=cv).fit(X, y)
    for params, score in zip(search.cv_results_["params"],
                             search.cv_results_["mean_test_score"]):
        spelled_out = CNNClassifier(
            layers=make_layers(params["layers__0__filters"], 3), input_shape=(1, 8, 8),
            max_iter=3, random_state=0)
        assert score == cross_val_score(spelled_out, X, y, cv=cv).mean()
    best = search.best_params_["layers__0__filters"]
    assert search.best_estimator_.layers == make_layers(best, 3)
    assert search.best_estimator_.coefs_[0].shape[0] == best
    assert base.layers == make_layers()


def test_pipeline_reaches_the_layers_of_its_step():
    pipe = Pipeline([("scale", StandardScaler()),
                     ("cnn", CNNClassifier(layers=make_layers()))])
    assert pipe.get_params()["cnn__layers__3__layers__0__filters"] == 4
    pipe.set_params(cnn__layers__3__layers__0__filters=9)
    assert pipe.named_steps["cnn"].layers[3].layers[0] == Conv2D(9, 3, padding=1)


@pytest.mark.parametrize("key, value, message", [
    ("layers__5__filters", 2, r"'layers__5__filters'.*layers has 5 layers "
                              r"\(indices 0 to 4\)"),
    ("layers__x__filters", 2, r"'layers__x__filters'.*'x' is no layer index"),
    ("layers__3__layers__2__filters", 2,
     r"'layers__3__layers__2__filters'.*layers__3__layers has 2 layers"),
    ("layers__0__units", 2, r"'layers__0__units'.*layers__0 is Conv2D.*no field "
                            r"'units' \(its fields: filters, kernel_size"),
    ("layers__1__alpha", 2, r"'layers__1__alpha'.*ReLU\(\), which has no field "
                            r"'alpha' \(its fields: none\)"),
    ("layers__0__filters__0", 2, r"'layers__0__filters__0'.*layers__0__filters is "
                                 r"4, not a list of layers"),
    ("layers__0__filters", 0, r"layers__0__filters: Conv2D: filters must be a "
                              r"positive int, got 0"),
    ("layers__3__layers", [], r"layers__3__layers: Residual: layers must be a non-empty"),
    ("layers__2", Dense, r"layers__2 must be a layer specification"),
])
def test_a_key_naming_no_layer_or_field_is_a_clear_error(key, value, message):
    layers = make_layers()
    clf = CNNClassifier(layers=layers)
    with pytest.raises(ValueError, match=message):
        clf.set_params(**{key: value})
    assert clf.layers is layers and layers == make_layers()


def test_layer_fields_without_layers_is_a_clear_error():
    with pytest.raises(ValueError, match=r"'layers__0__filters'.*layers is None"):
        CNNClassifier().set_params(layers__0__filters=8)


def test_unknown_top_level_parameter_still_refused():
    with pytest.raises(ValueError, match="Invalid parameter 'filter'"):
        CNNClassifier(layers=make_layers()).set_params(filter=3)


def test_fitted_estimator_keeps_working_after_set_params(small_digits):
    X, y = small_digits
    clf = CNNClassifier(layers=make_layers(), input_shape=(1, 8, 8), max_iter=1,
                        random_state=0).fit(X, y)
    before = clf.predict_proba(X)
    clf.set_params(layers__0__filters=2)
    np.testing.assert_array_equal(clf.predict_proba(X), before)
    assert clf.fit(X, y).coefs_[0].shape[0] == 2


def test_html_representation_lists_the_estimators_own_parameters():
    html = CNNClassifier(layers=make_layers(), learning_rate="cosine")._repr_html_()
    assert "learning_rate" in html and "layers" in html
    assert "layers__0" not in html
