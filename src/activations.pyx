"""Elementwise activation kernels on flat arrays: ReLU, tanh, sigmoid,
leaky ReLU, ELU, GELU (exact and tanh-approximated) and their gradients.

The loops themselves are in elementwise.h (ReLU) and activations.h (the
others; branch-free, libm for the transcendental functions). Threads take
fixed blocks of BLOCK elements. Outputs may alias inputs: each element is
read before it is written.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stddef cimport ptrdiff_t

cdef extern from "elementwise.h" nogil:
    void fcnn_relu_f32(const float *x, float *y, ptrdiff_t n)
    void fcnn_relu_f64(const double *x, double *y, ptrdiff_t n)
    void fcnn_relu_backward_f32(const float *gy, const float *y, float *gx, ptrdiff_t n)
    void fcnn_relu_backward_f64(const double *gy, const double *y, double *gx, ptrdiff_t n)

cdef Py_ssize_t BLOCK = 1 << 12
# Arrays shorter than this run on one thread: waking another costs more.
cdef Py_ssize_t MIN_PARALLEL = 1 << 15


cdef inline int threads_for(Py_ssize_t n, int n_threads) noexcept nogil:
    return n_threads if n >= MIN_PARALLEL else 1


def relu_forward(const floating[::1] x, floating[::1] y, int n_threads):
    """y = max(x, 0); NaN stays NaN."""
    cdef Py_ssize_t n = x.shape[0], block, start, length
    with nogil:
        for block in prange((n + BLOCK - 1) // BLOCK, schedule='static',
                            num_threads=threads_for(n, n_threads)):
            start = block * BLOCK
            length = n - start if n - start < BLOCK else BLOCK
            if floating is float:
                fcnn_relu_f32(&x[0] + start, &y[0] + start, length)
            else:
                fcnn_relu_f64(&x[0] + start, &y[0] + start, length)


def relu_backward(const floating[::1] grad_y, const floating[::1] y,
                  floating[::1] grad_x, int n_threads):
    """grad_x = grad_y where the ReLU output y is positive, 0 elsewhere."""
    cdef Py_ssize_t n = y.shape[0], block, start, length
    with nogil:
        for block in prange((n + BLOCK - 1) // BLOCK, schedule='static',
                            num_threads=threads_for(n, n_threads)):
            start = block * BLOCK
            length = n - start if n - start < BLOCK else BLOCK
            if floating is float:
                fcnn_relu_backward_f32(&grad_y[0] + start, &y[0] + start,
                                       &grad_x[0] + start, length)
            else:
                fcnn_relu_backward_f64(&grad_y[0] + start, &y[0] + start,
                                       &grad_x[0] + start, length)


cdef extern from "activations.h" nogil:
    enum:
        FCNN_TANH, FCNN_TANH_BACKWARD, FCNN_SIGMOID, FCNN_SIGMOID_BACKWARD,
        FCNN_LEAKY_RELU, FCNN_LEAKY_RELU_BACKWARD, FCNN_ELU, FCNN_ELU_BACKWARD,
        FCNN_GELU, FCNN_GELU_BACKWARD, FCNN_GELU_TANH, FCNN_GELU_TANH_BACKWARD
    void fcnn_activation_f32(int op, const float *a, const float *b, float *out,
                             ptrdiff_t n, float param)
    void fcnn_activation_f64(int op, const double *a, const double *b, double *out,
                             ptrdiff_t n, double param)


cdef void activation_blocks(int op, const floating *a, const floating *b,
                            floating *out, Py_ssize_t n, double param,
                            int n_threads) noexcept nogil:
    """activations.h's loop ``op`` over n elements, BLOCK by BLOCK (a
    forward loop reads a alone and ignores b)."""
    cdef Py_ssize_t block, start, length
    for block in prange((n + BLOCK - 1) // BLOCK, schedule='static',
                        num_threads=threads_for(n, n_threads)):
        start = block * BLOCK
        length = n - start if n - start < BLOCK else BLOCK
        if floating is float:
            fcnn_activation_f32(op, a + start, b + start, out + start, length,
                                <float>param)
        else:
            fcnn_activation_f64(op, a + start, b + start, out + start, length, param)


cdef inline void forward_loop(int op, const floating[::1] x, floating[::1] y,
                              double param, int n_threads) noexcept nogil:
    if x.shape[0]:
        activation_blocks(op, &x[0], &x[0], &y[0], x.shape[0], param, n_threads)


cdef inline void backward_loop(int op, const floating[::1] grad_y,
                               const floating[::1] activation, floating[::1] grad_x,
                               double param, int n_threads) noexcept nogil:
    if grad_y.shape[0]:
        activation_blocks(op, &grad_y[0], &activation[0], &grad_x[0],
                          grad_y.shape[0], param, n_threads)


def tanh_forward(const floating[::1] x, floating[::1] y, int n_threads):
    """y = tanh(x)."""
    with nogil:
        forward_loop(FCNN_TANH, x, y, 0.0, n_threads)


def tanh_backward(const floating[::1] grad_y, const floating[::1] y,
                  floating[::1] grad_x, int n_threads):
    """grad_x = grad_y (1 - y^2), y the output of tanh."""
    with nogil:
        backward_loop(FCNN_TANH_BACKWARD, grad_y, y, grad_x, 0.0, n_threads)


def sigmoid_forward(const floating[::1] x, floating[::1] y, int n_threads):
    """y = 1 / (1 + exp(-x)), without overflow for any x."""
    with nogil:
        forward_loop(FCNN_SIGMOID, x, y, 0.0, n_threads)


def sigmoid_backward(const floating[::1] grad_y, const floating[::1] y,
                     floating[::1] grad_x, int n_threads):
    """grad_x = grad_y y (1 - y), y the output of the sigmoid."""
    with nogil:
        backward_loop(FCNN_SIGMOID_BACKWARD, grad_y, y, grad_x, 0.0, n_threads)


def leaky_relu_forward(const floating[::1] x, floating[::1] y, double negative_slope,
                       int n_threads):
    """y = x where x > 0, negative_slope x elsewhere."""
    with nogil:
        forward_loop(FCNN_LEAKY_RELU, x, y, negative_slope, n_threads)


def leaky_relu_backward(const floating[::1] grad_y, const floating[::1] y,
                        floating[::1] grad_x, double negative_slope, int n_threads):
    """grad_x = grad_y where the output y > 0, negative_slope grad_y elsewhere
    (negative_slope >= 0)."""
    with nogil:
        backward_loop(FCNN_LEAKY_RELU_BACKWARD, grad_y, y, grad_x, negative_slope,
                      n_threads)


def elu_forward(const floating[::1] x, floating[::1] y, double alpha, int n_threads):
    """y = x where x > 0, alpha (exp(x) - 1) elsewhere."""
    with nogil:
        forward_loop(FCNN_ELU, x, y, alpha, n_threads)


def elu_backward(const floating[::1] grad_y, const floating[::1] y,
                 floating[::1] grad_x, double alpha, int n_threads):
    """grad_x = grad_y where the output y > 0, grad_y (y + alpha) elsewhere
    (alpha > 0)."""
    with nogil:
        backward_loop(FCNN_ELU_BACKWARD, grad_y, y, grad_x, alpha, n_threads)


def gelu_forward(const floating[::1] x, floating[::1] y, bint tanh_approximation,
                 int n_threads):
    """y = x Phi(x), Phi the standard normal distribution function (erf
    form), or with tanh_approximation 0.5 x (1 + tanh(sqrt(2 / pi)
    (x + 0.044715 x^3)))."""
    with nogil:
        forward_loop(FCNN_GELU_TANH if tanh_approximation else FCNN_GELU,
                     x, y, 0.0, n_threads)


def gelu_backward(const floating[::1] grad_y, const floating[::1] x,
                  floating[::1] grad_x, bint tanh_approximation, int n_threads):
    """grad_x = grad_y (Phi(x) + x phi(x)), or the derivative of the tanh
    approximation, from the input x."""
    with nogil:
        backward_loop(FCNN_GELU_TANH_BACKWARD if tanh_approximation
                      else FCNN_GELU_BACKWARD, grad_y, x, grad_x, 0.0, n_threads)
