/* Branch-free pieces of the normalization kernels (normalization.pyx). */
#ifndef FASTCNN_NORMALIZATION_H
#define FASTCNN_NORMALIZATION_H

#include <stdint.h>
#include <string.h>

/* g where a ReLU's output y is positive, else +0 (also where y is NaN), as
 * `y > 0 ? g : 0` computes it, but as a mask on g's bits: the signs of y are
 * random in training, and a branch on them mispredicts half the time. */
static inline float fcnn_relu_passed_f32(float g, float y)
{
    uint32_t bits;
    memcpy(&bits, &g, sizeof bits);
    bits &= (uint32_t)0 - (uint32_t)(y > 0.0f);
    memcpy(&g, &bits, sizeof bits);
    return g;
}

static inline double fcnn_relu_passed_f64(double g, double y)
{
    uint64_t bits;
    memcpy(&bits, &g, sizeof bits);
    bits &= (uint64_t)0 - (uint64_t)(y > 0.0);
    memcpy(&g, &bits, sizeof bits);
    return g;
}

#endif
