"""fastcnn: convolutional networks on the CPU.

Cython/OpenMP kernels (``fastcnn.functional``) under a scikit-learn estimator.
"""
from . import datasets, functional, layers
from ._classifier import CNNClassifier, TrainingDivergedError
from ._threads import effective_n_threads

__version__ = "0.1.0"
__all__ = ["CNNClassifier", "TrainingDivergedError", "datasets", "functional",
           "layers", "effective_n_threads", "__version__"]
