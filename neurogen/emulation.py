"""Running the exact emitted CUDA source on the CPU (``backend="cuda-emulated"``).

The kernel text that NVRTC compiles is compiled unmodified by the host C++
compiler, preceded by a small shim (``templates/cuda_emulation_shim.h``:
``__global__``, ``__device__``, ``threadIdx``...) and followed by a launcher
that runs the grid serially, block by block and thread by thread. Half types
use the CUDA toolkit's ``cuda_fp16.h``/``cuda_bf16.h`` host code. For testing
and debugging the CUDA path on machines without a GPU: it is slow.
"""
import functools
import importlib.resources

from . import runtime
from .codegen import _env, _signature, kernel_args, render_ir
from .errors import BackendUnavailableError

HALF = ("float16", "bfloat16")


@functools.lru_cache(maxsize=None)
def shim() -> str:
    return importlib.resources.files("neurogen").joinpath(
        "templates/cuda_emulation_shim.h").read_text()


def emulated_source(ir, model, cfg) -> str:
    """Shim + the emitted CUDA source (byte for byte) + a serial grid launcher."""
    args = kernel_args(model, ir.kind, cfg)
    launcher = _env.get_template("cuda_emulation_launch.j2").render(
        name=ir.name, signature=_signature(args), arg_names=[a.name for a in args])
    return shim() + render_ir(ir) + launcher


def flags(dtype):
    base = runtime.CPU_FLAGS
    if dtype not in HALF:
        return base
    dirs = runtime.cuda_include_dirs(host=True)
    if not dirs:
        raise BackendUnavailableError(
            f"emulating {dtype} kernels needs cuda_fp16.h/cuda_bf16.h on the host: install "
            "a CUDA toolkit (its include folder, e.g. /usr/local/cuda/include, or set $CUDA_PATH)")
    return base + ("-DNG_EMULATE_HALF", f"-I{dirs[0]}")


def compile_emulated(ir, model, cfg):
    """The ctypes function running ``ir``'s CUDA kernel serially on the host."""
    return runtime.compile_cpp(emulated_source(ir, model, cfg), f"ng_emulate_{ir.name}",
                               flags(ir.dtype))
