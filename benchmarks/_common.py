"""Networks and data shared by the benchmarks (not part of the package)."""
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from fastcnn import datasets
from fastcnn.layers import (Conv1D, Conv2D, Dense, Flatten, MaxPool2D, ReLU)

# The hidden layers of each benchmark network; the estimator adds the output
# Dense(10). The PyTorch twins in bench_training.py follow these exactly.
NETWORKS = {
    # LeCun et al. 1998, with ReLU and max pooling
    "lenet5": [Conv2D(6, 5, padding=2), ReLU(), MaxPool2D(2),
               Conv2D(16, 5), ReLU(), MaxPool2D(2),
               Flatten(), Dense(120), ReLU(), Dense(84), ReLU()],
    # two conv-conv-pool blocks, 3x3 same padding, dense 128
    "fourconv": [Conv2D(32, 3, padding="same"), ReLU(),
                 Conv2D(32, 3, padding="same"), ReLU(), MaxPool2D(2),
                 Conv2D(64, 3, padding="same"), ReLU(),
                 Conv2D(64, 3, padding="same"), ReLU(), MaxPool2D(2),
                 Flatten(), Dense(128), ReLU()],
    # the MNIST-1D paper's CNN (Greydanus 2020): 3 x Conv1D(25), dense 125 -> 10
    "mnist1d": [Conv1D(25, 5, stride=2, padding=1), ReLU(),
                Conv1D(25, 3, stride=2, padding=1), ReLU(),
                Conv1D(25, 3, stride=2, padding=1), ReLU(), Flatten()],
    # the main job's digits CNN: 16 and 32 filters 3x3 same, pool 2, dense 10
    "digits": [Conv2D(16, 3, padding="same"), ReLU(), MaxPool2D(2),
               Conv2D(32, 3, padding="same"), ReLU(), MaxPool2D(2), Flatten()],
}


def load_digits_split(seed=0):
    """digits as (n, 1, 8, 8) in [0, 1], 25% held out (stratified)."""
    digits = load_digits()
    X = (digits.images[:, np.newaxis] / 16.0).astype(np.float32)
    return train_test_split(X, digits.target, test_size=0.25,
                            random_state=seed, stratify=digits.target)


def load_fashion(data_dir=None):
    """Fashion-MNIST as (n, 1, 28, 28) float32 in [0, 1]: X_tr, X_te, y_tr, y_te."""
    X_train, y_train, X_test, y_test = datasets.load_fashion_mnist(data_dir)
    scale = np.float32(1 / 255)
    return (X_train[:, np.newaxis] * scale, X_test[:, np.newaxis] * scale,
            y_train, y_test)


def load_mnist1d(seed=42):
    """MNIST-1D from the mnist1d package's local generator (never its
    download): 4000 training and 1000 test signals (n, 1, 40)."""
    from mnist1d.data import get_dataset_args, make_dataset
    args = get_dataset_args()
    args.seed = seed
    data = make_dataset(args)
    X_train = data["x"][:, np.newaxis].astype(np.float32)
    X_test = data["x_test"][:, np.newaxis].astype(np.float32)
    return X_train, X_test, data["y"], data["y_test"]
