"""The ``cuda`` target (alias ``cupy``): the IR as CUDA (``templates/cuda_kernel.cu.j2``),
compiled by NVRTC through CuPy (whose own cubin cache keeps the result across
processes), launched one thread per neuron on torch's current stream, on torch memory,
with no copies. :func:`compile_ptx` needs no GPU.
"""
import os
import warnings

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
    lines = CLines(ir)
    ctx = header_context(ir, "cuda", TYPES)
    ctx.update(signature=signature(list(ir.args)), uniform=lines(ir.uniform),
               per_neuron=lines(ir.per_neuron), before=lines(ir.before),
               step=lines(ir.step), first=None if ir.first is None else lines(ir.first),
               after=lines(ir.after), template="cuda_kernel.cu.j2")
    return env.get_template("cuda_kernel.cu.j2").render(**ctx)


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
        import numpy as np
        import torch
        cp = cupy()
        conv = {"ptr": np.uint64, "f32": np.float32, "f64": np.float64, "i32": np.int32,
                "i64": np.int64}
        grid, block = launch_config(n)
        with cp.cuda.Device(_index(device)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # ExternalStream, CuPy >= 14
                stream = cp.cuda.ExternalStream(torch.cuda.current_stream(device).cuda_stream)
            kernel.fn((grid,), (block,), tuple(conv[k](v) for k, v in packed), stream=stream)

__all__ = ["CudaTarget", "TYPES", "BLOCK", "launch_config", "cupy", "include_dirs",
           "nvrtc_options", "compile_ptx", "render_cuda"]
