"""Convolution and pooling on arrays: the documented API over the kernels.

Arrays are channels-first. Images are ``(N, C, H, W)`` with kernels
``(F, C, KH, KW)``; signals (time series) are ``(N, C, L)`` with kernels
``(F, C, K)``. Each function validates its input (shapes, dtypes, parameters),
allocates its output and runs a compiled OpenMP kernel. float32 in gives
float32 out, float64 gives float64; other dtypes, or two float dtypes mixed,
raise TypeError. Non-contiguous input is copied to C order once; read-only
input is accepted as it is.

"Convolution" here means correlation, as in every deep-learning library::

    y[n, f, i, j] = b[f] + sum_{c, a, b} w[f, c, a, b] x[n, c, i*sh + a*dh - ph, j*sw + b*dw - pw]

with zero padding ``(ph, pw)`` before each axis, stride ``(sh, sw)`` and
dilation ``(dh, dw)``, so that the output has
``(H + ph + ph_after - dh*(KH - 1) - 1) // sh + 1`` rows (likewise
columns). Padding is the same after as before unless given per axis as a
``(before, after)`` pair.

A computation repeated on the same arrays (a network's buffers, batch after
batch) can be validated once with :func:`prepare` and then run directly.

Every function takes ``n_threads``: None uses the physical cores within the
limits set by ``OMP_NUM_THREADS`` or threadpoolctl, a positive int that many
threads, a negative int counts back from all cores (-1: all). Results are
bitwise identical for any number of threads.

The package mirrors src/: one module per compiled kernel module
(_correlation, _pooling, _global_pooling, _dense, _activations, _loss,
_optim, _batch, _dropout, _normalization),
the argument checks they share in _checks, and in _calls the kernel call
each function validates its arguments into, which prepare() keeps.
"""
from ._activations import (elu, elu_backward, gelu, gelu_backward, leaky_relu,
                           leaky_relu_backward, relu, relu_backward, sigmoid,
                           sigmoid_backward, tanh, tanh_backward)
from ._batch import all_finite, take_samples
from ._calls import prepare
from ._checks import output_size
from ._correlation import (correlate1d, correlate1d_backward,
                           correlate1d_backward_input,
                           correlate1d_backward_kernel, correlate2d,
                           correlate2d_backward, correlate2d_backward_input,
                           correlate2d_backward_input_mirrored,
                           correlate2d_backward_kernel)
from ._dense import (linear, linear_backward, linear_backward_input,
                     linear_backward_weight)
from ._loss import log_softmax, softmax, softmax_cross_entropy, squared_error
from ._optim import adam_update, sgd_update
from ._pooling import (avg_pool1d, avg_pool1d_backward, avg_pool2d,
                       avg_pool2d_backward, max_pool1d, max_pool1d_backward,
                       max_pool2d, max_pool2d_backward)
from ._dropout import dropout, dropout_backward
from ._pooling import (l2_pool1d, l2_pool1d_backward, l2_pool2d,
                       l2_pool2d_backward)
from ._global_pooling import (global_avg_pool1d, global_avg_pool1d_backward,
                              global_avg_pool2d, global_avg_pool2d_backward,
                              global_max_pool1d, global_max_pool1d_backward,
                              global_max_pool2d, global_max_pool2d_backward)
from ._normalization import (batch_norm, batch_norm_backward,
                             local_response_norm, local_response_norm_backward)

__all__ = [
    "correlate2d", "correlate2d_backward", "correlate2d_backward_input",
    "correlate2d_backward_kernel", "correlate2d_backward_input_mirrored",
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "correlate1d", "correlate1d_backward", "correlate1d_backward_input",
    "correlate1d_backward_kernel", "max_pool1d", "max_pool1d_backward",
    "avg_pool1d", "avg_pool1d_backward", "output_size",
    "linear", "linear_backward", "linear_backward_input",
    "linear_backward_weight", "relu", "relu_backward", "log_softmax",
    "softmax", "softmax_cross_entropy", "squared_error", "sgd_update", "adam_update",
    "take_samples", "all_finite", "prepare",
    "dropout", "dropout_backward",
    "l2_pool2d", "l2_pool2d_backward", "l2_pool1d", "l2_pool1d_backward",
    "global_avg_pool2d", "global_avg_pool2d_backward", "global_avg_pool1d",
    "global_avg_pool1d_backward", "global_max_pool2d",
    "global_max_pool2d_backward", "global_max_pool1d",
    "global_max_pool1d_backward",
    "tanh", "tanh_backward", "sigmoid", "sigmoid_backward", "leaky_relu",
    "leaky_relu_backward", "elu", "elu_backward", "gelu", "gelu_backward",
    "batch_norm", "batch_norm_backward", "local_response_norm",
    "local_response_norm_backward",
]
