"""GridSearchCV of CNNClassifier on a Dask cluster through joblib's 'dask'
backend (the README's "Grid search on a cluster"): the same scores and
the same fitted best estimator, bit for bit, as n_jobs=1; and one kernel
thread in each worker process. dask and distributed are optional: without
them these tests skip."""
import joblib
import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV

from fastcnn import CNNClassifier, effective_n_threads
from fastcnn.layers import Conv2D, MaxPool2D, ReLU

pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def client():
    # worker processes (the nanny's): a threaded cluster cannot listen on
    # host="127.0.0.1", and processes are what a real cluster runs
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        yield client


def test_grid_search_on_dask_equals_n_jobs_1(client, digits):
    X, y = digits
    base = CNNClassifier(layers=[Conv2D(4, 3, padding=1), ReLU(), MaxPool2D(2)],
                         input_shape=(1, 8, 8), hidden_layer_sizes=(16,), max_iter=4,
                         random_state=0)
    grid = {"layers__0__filters": [2, 4], "learning_rate": ["constant", "cosine"]}
    serial = GridSearchCV(base, grid, cv=2, n_jobs=1).fit(X, y)
    with distributed.get_task_stream(client) as tasks, joblib.parallel_backend("dask"):
        on_dask = GridSearchCV(base, grid, cv=2, n_jobs=-1).fit(X, y)
    # the fits ran on the workers
    assert {task["worker"] for task in tasks.data} <= set(client.scheduler_info()["workers"])
    assert len(tasks.data) > 0
    for key in ("mean_test_score", "split0_test_score", "split1_test_score"):
        np.testing.assert_array_equal(on_dask.cv_results_[key], serial.cv_results_[key])
    assert on_dask.best_params_ == serial.best_params_
    np.testing.assert_array_equal(on_dask.best_estimator_.network_.params,
                                  serial.best_estimator_.network_.params)
    np.testing.assert_array_equal(on_dask.predict_proba(X), serial.predict_proba(X))
    np.testing.assert_array_equal(on_dask.predict(X), serial.predict(X))


def test_worker_processes_give_fastcnn_one_thread(client):
    """distributed's nanny starts workers with OMP_NUM_THREADS=1, which
    n_threads=None honours (the README says so)."""
    # a fastcnn function, which the workers import (one of this test module
    # would be pickled by reference to a module they cannot import)
    threads = client.run(effective_n_threads, None)
    assert len(threads) == 2
    assert set(threads.values()) == {1}
