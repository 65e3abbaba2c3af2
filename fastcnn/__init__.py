"""fastcnn: convolutional networks on the CPU.

Cython/OpenMP kernels (``fastcnn.functional``) under scikit-learn estimators.
"""
from . import datasets, functional, layers, preprocessing
from ._classifier import CNNClassifier, InputShapeWarning
from ._regressor import CNNRegressor
from ._threads import effective_n_threads
from ._training import TrainingDivergedError, profile_training

__version__ = "0.1.0"
__all__ = ["CNNClassifier", "CNNRegressor", "InputShapeWarning", "TrainingDivergedError",
           "datasets", "functional", "layers", "preprocessing",
           "effective_n_threads", "profile_training", "__version__"]
