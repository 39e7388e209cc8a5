// neurogen CUDA emulation shim: lets the host C++ compiler build emitted .cu text unmodified
// and run its grid serially, block by block and thread by thread (no threads, no thread_local).
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
static ng_emu_dim3 ng_emu_threadIdx, ng_emu_blockIdx, ng_emu_blockDim, ng_emu_gridDim;
#define threadIdx ng_emu_threadIdx
#define blockIdx ng_emu_blockIdx
#define blockDim ng_emu_blockDim
#define gridDim ng_emu_gridDim
#line 1 "emitted.cu"
