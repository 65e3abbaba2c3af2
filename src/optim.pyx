"""Parameter updates on flat arrays: SGD with momentum (optionally Nesterov)
and Adam, each in one pass over the parameters.

All of a network's parameters live in one flat array, weights first, so the
L2 penalty applies to the first n_penalized entries (the weights, not the
biases). Threads take fixed blocks of BLOCK entries: each entry is updated by
the same instructions whatever the thread count, so the bits do not depend
on it. Formulas as in scikit-learn's MLP optimizers.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt

cdef Py_ssize_t BLOCK = 4096
cdef Py_ssize_t MIN_PARALLEL = 1 << 16


cdef inline int threads_for(Py_ssize_t n, int n_threads) noexcept nogil:
    return n_threads if n >= MIN_PARALLEL else 1


def sgd_step(floating[::1] params, const floating[::1] grads,
             floating[::1] velocity, double learning_rate, double momentum,
             bint nesterov, double l2, Py_ssize_t n_penalized, int n_threads):
    """velocity = momentum * velocity - lr * g, with g = grad + l2 * param on
    the penalized entries; params += velocity, or with Nesterov
    params += momentum * velocity - lr * g."""
    cdef Py_ssize_t n = params.shape[0], block, i, end
    cdef floating lr = learning_rate, mu = momentum, lam = l2, g, v
    with nogil:
        for block in prange((n + BLOCK - 1) // BLOCK, schedule='static',
                            num_threads=threads_for(n, n_threads)):
            end = (block + 1) * BLOCK if (block + 1) * BLOCK < n else n
            for i in range(block * BLOCK, end):
                g = grads[i]
                if i < n_penalized:
                    g = g + lam * params[i]
                v = mu * velocity[i] - lr * g
                velocity[i] = v
                if nesterov:
                    params[i] = params[i] + (mu * v - lr * g)
                else:
                    params[i] = params[i] + v


def adam_step(floating[::1] params, const floating[::1] grads,
              floating[::1] first_moment, floating[::1] second_moment,
              double step_size, double beta_1, double beta_2, double epsilon,
              double l2, Py_ssize_t n_penalized, int n_threads):
    """m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
    params -= step_size * m / (sqrt(v) + eps), with g as in sgd_step and
    step_size = lr * sqrt(1 - b2^t) / (1 - b1^t) given by the caller."""
    cdef Py_ssize_t n = params.shape[0], block, i, end
    cdef floating b1 = beta_1, b2 = beta_2, eps = epsilon, lam = l2
    cdef floating step = step_size, g, m, v
    with nogil:
        for block in prange((n + BLOCK - 1) // BLOCK, schedule='static',
                            num_threads=threads_for(n, n_threads)):
            end = (block + 1) * BLOCK if (block + 1) * BLOCK < n else n
            for i in range(block * BLOCK, end):
                g = grads[i]
                if i < n_penalized:
                    g = g + lam * params[i]
                m = b1 * first_moment[i] + (1 - b1) * g
                v = b2 * second_moment[i] + (1 - b2) * g * g
                first_moment[i] = m
                second_moment[i] = v
                params[i] = params[i] - step * m / (sqrt(v) + eps)
