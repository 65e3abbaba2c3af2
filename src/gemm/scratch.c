/* Aligned allocation and per-thread scratch; see scratch.h. */
#include <stdlib.h>

#include "gemm/scratch.h"

void *fcnn_malloc(size_t n_bytes)
{
    void *p = NULL;
    if (n_bytes == 0) n_bytes = 64;
#if defined(_WIN32)
    p = _aligned_malloc(n_bytes, 64);
#else
    if (posix_memalign(&p, 64, n_bytes) != 0) p = NULL;
#endif
    return p;
}

void fcnn_free(void *p)
{
#if defined(_WIN32)
    _aligned_free(p);
#else
    free(p);
#endif
}

/* ------------------------------------------------------ per-thread scratch */

/*
 * Each thread keeps one scratch block between kernel calls and replaces it
 * with a larger one when a call needs more. Allocating and freeing scratch
 * on every call, as the kernels did, fragments a thread's malloc arena:
 * blocks of a few sizes taken and given back in turn, with small
 * allocations landing between them, made the OpenMP worker's arena grow to
 * 1 MiB of touched memory for LeNet-5, whose largest request is 213 KB.
 * The blocks are mapped from the system directly, not taken from malloc, so
 * that replacing one by a larger one leaves no hole behind either.
 *
 * A block starts with a header holding its size; the thread-exit destructor
 * unmaps it, so threads that come and go (Python threads, OpenMP pools that
 * shrink) leave nothing behind. A block over FCNN_SCRATCH_KEEP is unmapped
 * at the end of the call that needed it (fcnn_thread_scratch_trim): one
 * call on large images leaves nothing behind either, and such a call costs
 * far more than mapping its scratch.
 */
#define FCNN_SCRATCH_HEADER 64   /* keeps the usable part 64-byte aligned */
#define FCNN_SCRATCH_KEEP ((size_t)32 << 20)

#if defined(_WIN32)
#include <windows.h>

static void *scratch_map(size_t n_bytes)
{
    return VirtualAlloc(NULL, n_bytes, MEM_COMMIT | MEM_RESERVE, PAGE_READWRITE);
}

static void scratch_unmap(void *block)
{
    if (block != NULL)
        VirtualFree(block, 0, MEM_RELEASE);
}

static DWORD scratch_key = FLS_OUT_OF_INDEXES;
static INIT_ONCE scratch_once = INIT_ONCE_STATIC_INIT;

static VOID NTAPI scratch_release(PVOID block)
{
    scratch_unmap(block);
}

static BOOL CALLBACK scratch_key_create(PINIT_ONCE once, PVOID arg, PVOID *ctx)
{
    (void)once; (void)arg; (void)ctx;
    scratch_key = FlsAlloc(scratch_release);
    return TRUE;
}

static size_t *scratch_get(int *ok)
{
    InitOnceExecuteOnce(&scratch_once, scratch_key_create, NULL, NULL);
    *ok = scratch_key != FLS_OUT_OF_INDEXES;
    return *ok ? (size_t *)FlsGetValue(scratch_key) : NULL;
}

static void scratch_set(size_t *block)
{
    FlsSetValue(scratch_key, block);
}
#else
#include <pthread.h>
#include <sys/mman.h>

static void *scratch_map(size_t n_bytes)
{
    void *p = mmap(NULL, n_bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void scratch_unmap(void *block)
{
    if (block != NULL)
        munmap(block, ((size_t *)block)[0]);
}

static pthread_key_t scratch_key;
static int scratch_key_ok = 0;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_key_create(void)
{
    scratch_key_ok = pthread_key_create(&scratch_key, scratch_unmap) == 0;
}

static size_t *scratch_get(int *ok)
{
    pthread_once(&scratch_once, scratch_key_create);
    *ok = scratch_key_ok;
    return *ok ? (size_t *)pthread_getspecific(scratch_key) : NULL;
}

static void scratch_set(size_t *block)
{
    pthread_setspecific(scratch_key, block);
}
#endif

void *fcnn_thread_scratch(size_t n_bytes)
{
    int ok;
    size_t *block = scratch_get(&ok);
    size_t size;
    if (!ok)
        return NULL;
    size = FCNN_SCRATCH_HEADER + n_bytes;
    if (block == NULL || block[0] < size) {
        scratch_unmap(block);
        block = (size_t *)scratch_map(size);
        scratch_set(block);
        if (block == NULL)
            return NULL;
        block[0] = size;
    }
    return (char *)block + FCNN_SCRATCH_HEADER;
}

void fcnn_thread_scratch_trim(void)
{
    int ok;
    size_t *block = scratch_get(&ok);
    if (ok && block != NULL && block[0] > FCNN_SCRATCH_KEEP) {
        scratch_unmap(block);
        scratch_set(NULL);
    }
}
