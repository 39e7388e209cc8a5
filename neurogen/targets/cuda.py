"""The ``cuda`` target (alias ``cupy``): the IR as CUDA (``templates/cuda_kernel.cu.j2``),
compiled by NVRTC through CuPy (whose own cubin cache keeps the result across
processes), launched one thread per neuron on torch's current stream, on torch memory,
with no copies. :func:`compile_ptx` needs no GPU.
"""
import os
import warnings

from .. import abi
from ..errors import BackendUnavailableError, CompileError
from .base import Kernel, KernelTarget
from .c_source import CLines, env, header_context, signature

TYPES = {  # dtype: (C type of tensors, compute type, load, store)
    "float32": ("float", "float", "value", "value"),
    "float64": ("double", "double", "value", "value"),
    "float16": ("__half", "float", "__half2float(value)", "__float2half_rn(value)"),
    "bfloat16": ("__nv_bfloat16", "float", "__bfloat162float(value)",
                 "__float2bfloat16_rn(value)"),
}
BLOCK = 256


def launch_config(n: int, block: int = BLOCK):
    """Grid and block of a one-thread-per-neuron launch (CUDA and emulated CUDA alike)."""
    return (n + block - 1) // block, block


def cupy():
    """CuPy, or :class:`BackendUnavailableError` saying how to install it."""
    try:
        import cupy as cp
    except ImportError:
        raise BackendUnavailableError(
            "the CUDA backend needs CuPy: pip install 'neurogen[cuda12]' (or [cuda13])") from None
    return cp


def include_dirs(host: bool = False):
    """Folders holding ``cuda_fp16.h`` (from the nvidia-cuda-runtime wheel or a toolkit).

    ``host=True``: only folders a host compiler can use too (a toolkit's, which has
    ``crt/host_defines.h``; the wheel's headers are for NVRTC alone)."""
    dirs = []
    try:
        import nvidia.cuda_runtime as rt
        dirs += [os.path.join(p, "include") for p in rt.__path__]
    except ImportError:
        pass
    for root in (os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if root:
            dirs.append(os.path.join(root, "include"))
    need = ["cuda_fp16.h"] + (["crt/host_defines.h"] if host else [])
    return [d for d in dirs if all(os.path.exists(os.path.join(d, f)) for f in need)]


def nvrtc_options(arch: str = None):
    opts = ["--std=c++17"] + [f"-I{d}" for d in include_dirs()[:1]]
    if arch:
        opts.append(f"--gpu-architecture={arch}")
    return opts


def compile_ptx(source: str, arch: str = "compute_80") -> str:
    """Compile CUDA source to PTX with NVRTC (no GPU needed). Raises :class:`CompileError`."""
    cupy()
    from cupy.cuda import nvrtc
    prog = nvrtc.createProgram(source, "neurogen_kernel.cu", [], [])
    try:
        try:
            nvrtc.compileProgram(prog, nvrtc_options(arch))
        except nvrtc.NVRTCError:
            raise CompileError(f"NVRTC failed to compile a generated kernel for {arch}",
                               source=source, log=nvrtc.getProgramLog(prog)) from None
        ptx = nvrtc.getPTX(prog)
        return ptx.decode() if isinstance(ptx, bytes) else ptx
    finally:
        nvrtc.destroyProgram(prog)


def render_cuda(ir) -> str:
    """The CUDA text of ``ir`` (also what the emulated target compiles on the host)."""
    lines = CLines(ir, guard="ng_on" if ir.recurrent else None)
    ctx = header_context(ir, "cuda", TYPES)
    template = "cuda_recurrent.cu.j2" if ir.recurrent else "cuda_kernel.cu.j2"
    ctx.update(signature=signature(list(ir.args)), uniform=lines(ir.uniform),
               per_neuron=lines(ir.per_neuron), before=lines(ir.before),
               step=lines(ir.step), first=None if ir.first is None else lines(ir.first),
               after=lines(ir.after), template=template,
               rec=recurrent_context(ir) if ir.recurrent else None)
    return env.get_template(template).render(**ctx)


def recurrent_context(ir) -> dict:
    """What a recurrent kernel's pass before each step reads: each thread's value shared
    with the block (forward: its output at t - 1, the previous call's at t = 0; backward:
    its input gradient at t + 1, zero at t = T - 1) and the weight the pass multiplies."""
    n = abi.name
    if ir.kind == "forward":
        return dict(what="the recurrent input: W @ (the previous step's outputs), the nonzero "
                         "ones only", weight=n("rec_weight_t"),
                    value=f"ng_t == 0 ? ng_ld({n('rec_out0')}[ng_i]) : "
                          f"ng_ld({n('spike')}[ng_ti - ng_N])")
    return dict(what="the outputs' gradient through the next step's input: W^T @ grad_x[t + 1]",
                weight=n("rec_weight"),
                value=f"ng_t < ng_T - 1 ? ng_ld({n('grad_x')}[ng_ti + ng_N]) : (compute_t)0")


def recurrent_launch(H: int, compute: str, max_threads: int = 1024):
    """``(threads per block, shared bytes)`` of a recurrent kernel: one thread per neuron
    of a sequence, rounded up to whole warps."""
    threads = -(-H // 32) * 32
    if threads > max_threads:
        raise ValueError(f"the CUDA recurrent kernels run one thread per neuron of a sequence "
                         f"and this kernel can run {max_threads} threads per block on this "
                         f"device (its registers, the device's limit): hidden size {H} is too "
                         f"large; use at most {max_threads} neurons per layer or "
                         "backend='cpu'")
    return threads, H * (8 if compute == "double" else 4)


def _index(device):
    index = device.index if hasattr(device, "index") else device
    return index or 0


class CudaTarget(KernelTarget):
    """Generated CUDA on the GPU of the tensors."""

    name = "cuda"
    aliases = ("cupy",)
    auto_rank = 0
    dtypes = tuple(TYPES)

    def unavailable(self):
        try:
            cupy()
        except BackendUnavailableError as exc:
            return str(exc)
        import torch
        return None if torch.cuda.is_available() else "no CUDA device"

    def check(self, x):
        if not x.is_cuda:
            raise ValueError(f"backend='cuda' needs CUDA tensors, got a tensor on {x.device}")

    def auto_refusal(self, x):
        if not x.is_cuda:
            return ""
        try:
            cupy()
        except BackendUnavailableError as exc:
            return f"neurogen: falling back to the torch backend: {exc}"
        return None

    def render(self, ir) -> str:
        return render_cuda(ir)

    def kernel_key(self, device):
        return _index(device)

    def compile(self, ir, source, device) -> Kernel:
        cp = cupy()
        with cp.cuda.Device(_index(device)):
            try:
                module = cp.RawModule(code=source, options=tuple(nvrtc_options()),
                                      backend="nvrtc")
                module.compile()
            except cp.cuda.compiler.CompileException as exc:
                raise CompileError("NVRTC failed to compile a generated kernel", source=source,
                                   log=str(exc)) from None
        return Kernel(module.get_function(ir.name), ir, source)

    def launch(self, kernel, packed, n, T, device):
        """On torch's current stream of ``device`` (no copies, no host sync)."""
        grid, block = launch_config(n)
        _call(kernel, (grid,), (block,), packed, device)

    def launch_recurrent(self, kernel, packed, n, T, H, device):
        """One block per sequence (``n // H`` of them), one thread per neuron."""
        cp = cupy()
        with cp.cuda.Device(_index(device)) as dev:
            # the device's limit, and the kernel's own (its registers per thread)
            limit = min(dev.attributes["MaxThreadsPerBlock"],
                        getattr(kernel.fn, "max_threads_per_block", 1 << 30))
        threads, shared = recurrent_launch(H, kernel.ir.compute, limit)
        _call(kernel, (n // H,), (threads,), packed, device, shared)


def _call(kernel, grid, block, packed, device, shared=0):
    """Launch ``kernel`` on torch's current stream of ``device`` with the packed
    ``[(kind, value)]`` arguments converted to CuPy's scalar types."""
    import numpy as np
    import torch
    cp = cupy()
    conv = {"ptr": np.uint64, "f32": np.float32, "f64": np.float64, "i32": np.int32,
            "i64": np.int64}
    with cp.cuda.Device(_index(device)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # ExternalStream, CuPy >= 14
            stream = cp.cuda.ExternalStream(torch.cuda.current_stream(device).cuda_stream)
        kernel.fn(grid, block, tuple(conv[k](v) for k, v in packed), stream=stream,
                  shared_mem=shared)


__all__ = ["CudaTarget", "TYPES", "BLOCK", "launch_config", "cupy", "include_dirs",
           "nvrtc_options", "compile_ptx", "render_cuda", "recurrent_launch"]
