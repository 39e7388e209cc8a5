// neurogen CUDA emulation shim: lets the host C++ compiler build emitted .cu text unmodified
// and run its grid serially, block by block and thread by thread (no threads, no
// thread_local), or, for kernels with barriers (NG_EMULATE_THREADS), each block's threads
// as host threads.
#include <math.h>
#include <stdint.h>
#if defined(NG_EMULATE_HALF)
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#endif
#ifndef __global__
#define __global__
#endif
#ifndef __device__
#define __device__
#endif
#ifndef __host__
#define __host__
#endif
#ifndef __forceinline__
#define __forceinline__ inline
#endif
// CUDA's fast float intrinsics, as their exact counterparts (emulated float results may
// differ from a GPU's in the last bits; float64 kernels use neither)
// (macros: glibc declares its own extern __expf)
#define __expf(x) expf(x)
#define __fdividef(x, y) ((x) / (y))
struct ng_emu_dim3 { unsigned int x, y, z; };
#if defined(NG_EMULATE_THREADS)
// kernels with barriers (recurrent layers): each CUDA thread of a block is a host thread
#include <pthread.h>
static thread_local ng_emu_dim3 ng_emu_threadIdx, ng_emu_blockIdx;
static ng_emu_dim3 ng_emu_blockDim, ng_emu_gridDim;
static pthread_barrier_t ng_emu_barrier;
#define __syncthreads() pthread_barrier_wait(&ng_emu_barrier)
#define __shared__
#define NG_EMU_SHARED_DOUBLES 16384
static double ng_smem[NG_EMU_SHARED_DOUBLES];  // the block's shared memory
#else
static ng_emu_dim3 ng_emu_threadIdx, ng_emu_blockIdx, ng_emu_blockDim, ng_emu_gridDim;
#endif
#define threadIdx ng_emu_threadIdx
#define blockIdx ng_emu_blockIdx
#define blockDim ng_emu_blockDim
#define gridDim ng_emu_gridDim
#line 1 "emitted.cu"
