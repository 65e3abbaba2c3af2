/* Aligned allocation and the per-thread scratch of the matrix product's
 * callers (scratch.c). */
#ifndef FASTCNN_GEMM_SCRATCH_H
#define FASTCNN_GEMM_SCRATCH_H

#include <stddef.h>

/* 64-byte aligned allocation; NULL on failure. Free with fcnn_free. */
void *fcnn_malloc(size_t n_bytes);
void fcnn_free(void *p);
/* The calling thread's scratch, at least n_bytes, 64-byte aligned; NULL on
 * failure. Never free it: it stays the thread's until the thread exits or
 * fcnn_thread_scratch_trim unmaps it, and is the same memory on the next
 * call, which may be to another kernel, so nothing may be left in it
 * between calls. */
void *fcnn_thread_scratch(size_t n_bytes);
/* Called by each thread when its kernel call is done: unmaps the thread's
 * scratch if it is too large to keep (over 32 MiB). */
void fcnn_thread_scratch_trim(void);

#endif
