"""fastcnn: convolutional networks on the CPU.

Cython/OpenMP kernels (``fastcnn.functional``) under a scikit-learn estimator.
"""
from . import functional
from ._threads import effective_n_threads

__version__ = "0.1.0"
__all__ = ["functional", "effective_n_threads", "__version__"]
