/*
 * Panel layout of the packed-panel matrix product (gemm.h):
 *
 * A is packed into panels of MR rows: panel p holds A[p*MR + r, k] at
 * [p*K*MR + k*MR + r]; B into panels of NR columns: panel q holds
 * B[k, q*NR + c] at [q*K*NR + k*NR + c]. Rows and columns past M and N are
 * zero in the panels, so the micro-kernel never branches on edges inside its
 * loop; the edge is handled once, when C is written.
 *
 * Only constants: the extensions that size panels for the gemm module
 * include this, never the module's functions (they reach those through its
 * capsule, fastcnn/_kernels/gemm.pxd).
 */
#ifndef FASTCNN_GEMM_LAYOUT_H
#define FASTCNN_GEMM_LAYOUT_H

#define FCNN_MR_F32 8
#define FCNN_NR_F32 32
#define FCNN_MR_F64 8
#define FCNN_NR_F64 16

#endif
