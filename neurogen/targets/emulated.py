"""The ``cuda-emulated`` target: the exact CUDA text of the ``cuda`` target run on the CPU.

The kernel text NVRTC compiles is compiled unmodified by the host C++ compiler, preceded
by a small shim (``templates/cuda_emulation_shim.h``: ``__global__``, ``__device__``,
``threadIdx``...) and followed by a launcher that runs the grid serially, block by block
and thread by thread. Half types use the CUDA toolkit's ``cuda_fp16.h``/``cuda_bf16.h``
host code. For testing and debugging the CUDA path on machines without a GPU: it is
slow, and CI runs every generated CUDA kernel through it.
"""
import functools
import importlib.resources

from ..errors import BackendUnavailableError
from . import host_compiler
from .base import Kernel, KernelTarget
from .c_source import LaunchArg, env, signature
from .cuda import TYPES, include_dirs, launch_config, recurrent_launch, render_cuda

HALF = ("float16", "bfloat16")
# the launcher's own arguments, before the kernel's: the grid (packed by launch())
GRID_ARGS = (LaunchArg("ng_grid", "const unsigned int", "u32"),
             LaunchArg("ng_block", "const unsigned int", "u32"))


@functools.lru_cache(maxsize=None)
def shim() -> str:
    return importlib.resources.files("neurogen").joinpath(
        "templates/cuda_emulation_shim.h").read_text()


def launcher(ir) -> str:
    """A host function running ``ir``'s kernel over the grid, thread by thread (a kernel
    with barriers: each block's threads as host threads)."""
    template = "cuda_emulation_threads.j2" if ir.recurrent else "cuda_emulation_launch.j2"
    return env.get_template(template).render(
        name=ir.name, signature=signature(list(GRID_ARGS) + list(ir.args)),
        arg_names=[a.name for a in ir.args])


def flags(dtype, threads=False):
    base = host_compiler.CPU_FLAGS + (("-DNG_EMULATE_THREADS", "-pthread") if threads else ())
    if dtype not in HALF:
        return base
    dirs = include_dirs(host=True)
    if not dirs:
        raise BackendUnavailableError(
            f"emulating {dtype} kernels needs cuda_fp16.h/cuda_bf16.h on the host: install "
            "a CUDA toolkit (its include folder, e.g. /usr/local/cuda/include, or set $CUDA_PATH)")
    return base + ("-DNG_EMULATE_HALF", f"-I{dirs[0]}")


class EmulatedTarget(KernelTarget):
    """The ``cuda`` target's kernels, run serially on the CPU."""

    name = "cuda-emulated"
    dtypes = tuple(TYPES)

    def unavailable(self):
        return host_compiler.missing()

    def kernel_key(self, device):
        return host_compiler.cxx()  # $CXX may change within a process

    def check(self, x):
        if x.device.type != "cpu":
            raise ValueError("backend='cuda-emulated' runs the CUDA kernels on the CPU and needs "
                             f"CPU tensors, got a tensor on {x.device}")

    def render(self, ir) -> str:
        """The CUDA text, byte for byte as the ``cuda`` target compiles it."""
        return render_cuda(ir)

    def compile(self, ir, source, device) -> Kernel:
        program = shim() + source + launcher(ir)
        fn = host_compiler.compile_cpp(program, f"ng_emulate_{ir.name}",
                                       flags(ir.dtype, threads=ir.recurrent))
        return Kernel(fn, ir, source)

    def launch(self, kernel, packed, n, T, device):
        grid, block = launch_config(n)
        host_compiler.call(kernel.fn, list(zip([a.kind for a in GRID_ARGS], (grid, block)))
                           + packed)

    def launch_recurrent(self, kernel, packed, n, T, H, device):
        threads, shared = recurrent_launch(H, kernel.ir.compute)
        if shared > 8 * 16384:  # (NG_EMU_SHARED_DOUBLES in the shim)
            raise ValueError(f"the emulated recurrent kernels hold at most 16384 neurons' "
                             f"values in shared memory, not {H}")
        host_compiler.call(kernel.fn, list(zip([a.kind for a in GRID_ARGS], (n // H, threads)))
                           + packed)


__all__ = ["EmulatedTarget", "shim", "launcher", "flags", "GRID_ARGS"]
