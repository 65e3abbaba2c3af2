"""Parameter updates on flat arrays: SGD with momentum (optionally Nesterov)
and Adam, each in one pass over the parameters.

All of a network's parameters live in one flat array, weights first, so the
L2 penalty applies to the first n_penalized entries (the weights, not the
biases). The loops are in elementwise.h; threads take fixed blocks of BLOCK
entries, and every entry goes through the same arithmetic whatever the
thread count. Formulas as in scikit-learn's MLP optimizers.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stddef cimport ptrdiff_t

cdef extern from "elementwise.h" nogil:
    void fcnn_sgd_f32(float *p, const float *g, float *vel, ptrdiff_t n,
                      float lr, float mu, int nesterov, float l2)
    void fcnn_sgd_f64(double *p, const double *g, double *vel, ptrdiff_t n,
                      double lr, double mu, int nesterov, double l2)
    void fcnn_adam_f32(float *p, const float *g, float *m1, float *m2,
                       ptrdiff_t n, float step, float b1, float b2, float eps,
                       float l2)
    void fcnn_adam_f64(double *p, const double *g, double *m1, double *m2,
                       ptrdiff_t n, double step, double b1, double b2,
                       double eps, double l2)

cdef Py_ssize_t BLOCK = 1 << 12
cdef Py_ssize_t MIN_PARALLEL = 1 << 14


cdef inline int threads_for(Py_ssize_t n, int n_threads) noexcept nogil:
    return n_threads if n >= MIN_PARALLEL else 1


cdef inline Py_ssize_t clip(Py_ssize_t v, Py_ssize_t low,
                            Py_ssize_t high) noexcept nogil:
    return low if v < low else (high if v > high else v)


cdef inline void sgd_run(floating *p, const floating *g, floating *vel,
                         Py_ssize_t n, double lr, double mu, bint nesterov,
                         double l2) noexcept nogil:
    """elementwise.h's SGD loop on n entries, for either float type."""
    if floating is float:
        fcnn_sgd_f32(p, g, vel, n, lr, mu, nesterov, l2)
    else:
        fcnn_sgd_f64(p, g, vel, n, lr, mu, nesterov, l2)


cdef inline void adam_run(floating *p, const floating *g, floating *m1,
                          floating *m2, Py_ssize_t n, double step_size,
                          double b1, double b2, double eps,
                          double l2) noexcept nogil:
    """elementwise.h's Adam loop on n entries, for either float type."""
    if floating is float:
        fcnn_adam_f32(p, g, m1, m2, n, step_size, b1, b2, eps, l2)
    else:
        fcnn_adam_f64(p, g, m1, m2, n, step_size, b1, b2, eps, l2)


def sgd_step(floating[::1] params, const floating[::1] grads,
             floating[::1] velocity, double learning_rate, double momentum,
             bint nesterov, double l2, Py_ssize_t n_penalized, int n_threads):
    """velocity = momentum * velocity - lr * g, with g = grad + l2 * param on
    the penalized entries; params += velocity, or with Nesterov
    params += momentum * velocity - lr * g."""
    cdef Py_ssize_t n = params.shape[0], block, start, split, end
    cdef floating *p = &params[0]
    cdef const floating *g = &grads[0]
    cdef floating *vel = &velocity[0]
    with nogil:
        for block in prange((n + BLOCK - 1) // BLOCK, schedule='static',
                            num_threads=threads_for(n, n_threads)):
            # [start, split) is penalized, [split, end) is not. (Assigned
            # here, not through pointers, so that prange makes them private.)
            start = block * BLOCK
            end = clip(start + BLOCK, 0, n)
            split = clip(n_penalized, start, end)
            sgd_run(p + start, g + start, vel + start, split - start,
                    learning_rate, momentum, nesterov, l2)
            sgd_run(p + split, g + split, vel + split, end - split,
                    learning_rate, momentum, nesterov, 0)


def adam_step(floating[::1] params, const floating[::1] grads,
              floating[::1] first_moment, floating[::1] second_moment,
              double step_size, double beta_1, double beta_2, double epsilon,
              double l2, Py_ssize_t n_penalized, int n_threads):
    """m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
    params -= step_size * m / (sqrt(v) + eps), with g as in sgd_step and
    step_size = lr * sqrt(1 - b2^t) / (1 - b1^t) given by the caller."""
    cdef Py_ssize_t n = params.shape[0], block, start, split, end
    cdef floating *p = &params[0]
    cdef const floating *g = &grads[0]
    cdef floating *m1 = &first_moment[0]
    cdef floating *m2 = &second_moment[0]
    with nogil:
        for block in prange((n + BLOCK - 1) // BLOCK, schedule='static',
                            num_threads=threads_for(n, n_threads)):
            # [start, split) is penalized, [split, end) is not. (Assigned
            # here, not through pointers, so that prange makes them private.)
            start = block * BLOCK
            end = clip(start + BLOCK, 0, n)
            split = clip(n_penalized, start, end)
            adam_run(p + start, g + start, m1 + start, m2 + start,
                     split - start, step_size, beta_1, beta_2, epsilon, l2)
            adam_run(p + split, g + split, m1 + split, m2 + split,
                     end - split, step_size, beta_1, beta_2, epsilon, 0)
