"""One call of every public kernel on random data (make_kernel_call), for
the tests that run each kernel the same way: layouts, dtypes, threads."""
import dataclasses

import numpy as np

import fastcnn.functional as fcf
from _helpers.cases import ConvCase, PoolCase
from _helpers.references import max_pool_ref

# ================================================ one call of every kernel

CORRELATION_KERNEL_NAMES = [
    "correlate2d", "correlate2d_backward", "correlate2d_backward_input",
    "correlate2d_backward_kernel", "correlate2d_backward_input_mirrored",
    "correlate1d", "correlate1d_backward", "correlate1d_backward_input",
    "correlate1d_backward_kernel",
]
POOLING_KERNEL_NAMES = [
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "max_pool1d", "max_pool1d_backward", "avg_pool1d", "avg_pool1d_backward",
]
KERNEL_NAMES = CORRELATION_KERNEL_NAMES + POOLING_KERNEL_NAMES


@dataclasses.dataclass
class KernelCall:
    """A public function with its positional arguments (arrays and shapes)
    and keywords, ready to be called, possibly with extra keywords."""
    function: object
    args: list
    kwargs: dict

    def __call__(self, **extra):
        result = self.function(*self.args, **self.kwargs, **extra)
        return result if isinstance(result, tuple) else (result,)

    def with_args(self, args):
        return KernelCall(self.function, list(args), self.kwargs)


# Correlation geometries, by name, that between them take every path of the
# kernels: patch gathering (stride > 1) or patches read in place (stride 1);
# the transposed product or the mirrored correlation (8+ channels, stride 1,
# padding <= kernel - 1) for the input gradient; padded or unpadded samples.
CORRELATION_GEOMETRIES = {
    "strided-padded": {
        2: ConvCase(1, 3, 5, spatial=(9, 8), kernel=(3, 2), stride=(2, 1), padding=(1, 0)),
        1: ConvCase(1, 3, 4, spatial=(11,), kernel=(3,), stride=(2,), padding=(1,)),
    },
    "unit-stride-padded-8-channels": {
        2: ConvCase(1, 9, 5, spatial=(9, 8), kernel=(3, 2), stride=(1, 1), padding=(1, 1)),
        1: ConvCase(1, 9, 4, spatial=(11,), kernel=(3,), stride=(1,), padding=(2,)),
    },
    "unit-stride-unpadded": {
        2: ConvCase(1, 4, 10, spatial=(7, 9), kernel=(2, 3), stride=(1, 1), padding=(0, 0)),
        1: ConvCase(1, 4, 10, spatial=(13,), kernel=(4,), stride=(1,), padding=(0,)),
    },
}


def make_kernel_call(name, rng, dtype=np.float64, batch=3, geometry="strided-padded"):
    """A call of the public function ``name`` on random data.

    ``geometry`` names one of CORRELATION_GEOMETRIES; pooling has overlapping
    windows at strides differing per axis.
    """
    ndim = 1 if "1d" in name else 2
    conv = CORRELATION_GEOMETRIES[geometry][ndim].with_batch(batch)
    if ndim == 2:
        pool = PoolCase(batch, 3, spatial=(9, 8), size=(3, 2), stride=(2, 1))
    else:
        pool = PoolCase(batch, 3, spatial=(11,), size=(3,), stride=(2,))
    x, w, bias, grad_y = conv.random_inputs(rng, dtype)
    pooled_x = pool.random_input(rng, dtype)
    pooled_grad = rng.standard_normal(pool.y_shape).astype(dtype)
    argmax = max_pool_ref(pooled_x, pool.size, pool.stride)[1].astype(np.int32)
    operation = name.replace("2d", "").replace("1d", "")
    calls = {
        "correlate": ([x, w, bias], conv.geometry),
        "correlate_backward": ([x, w, grad_y], conv.geometry),
        "correlate_backward_input": ([grad_y, w, conv.x_shape], conv.geometry),
        "correlate_backward_kernel": ([x, grad_y, conv.w_shape], conv.geometry),
        "correlate_backward_input_mirrored": ([grad_y, w, conv.x_shape], conv.geometry),
        "max_pool": ([pooled_x], pool.geometry),
        "max_pool_backward": ([pooled_grad, argmax, pool.x_shape], {}),
        "avg_pool": ([pooled_x], pool.geometry),
        "avg_pool_backward": ([pooled_grad, pool.x_shape], pool.geometry),
    }
    args, kwargs = calls[operation]
    return KernelCall(getattr(fcf, name), args, kwargs)
