"""fastcnn: convolutional networks on the CPU.

Cython/OpenMP kernels (``fastcnn.functional``) under a scikit-learn estimator.
"""
from . import datasets, functional, layers
from ._classifier import CNNClassifier
from ._threads import effective_n_threads
from ._training import TrainingDivergedError, profile_training

__version__ = "0.1.0"
__all__ = ["CNNClassifier", "TrainingDivergedError", "datasets", "functional",
           "layers", "effective_n_threads", "profile_training", "__version__"]
