"""Compiling and launching generated kernels.

CPU: the host C++ compiler (``$CXX``, else ``c++``) builds a shared library,
cached on disk under :func:`cache_dir` with atomic writes and keyed by source,
compiler and flags; it is loaded with ctypes. CUDA: CuPy's ``RawModule``
(NVRTC) compiles, and CuPy's own cubin cache keeps the result; kernels launch
on torch's current stream, on torch memory, with no copies. Both launchers
take their argument order from :func:`neurogen.codegen.kernel_args`.
"""
import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

from .errors import BackendUnavailableError, CompileError

# No OpenMP runtime: a second one beside torch's spins against it. `omp simd` pragmas
# vectorise the neuron loop; threads come from launch_cpu's pool.
CPU_FLAGS = ("-O3", "-march=native", "-std=c++17", "-fPIC", "-shared", "-fopenmp-simd",
             "-ffp-contract=off", "-fno-math-errno")
_lock = threading.Lock()
_loaded = {}


def cache_dir() -> Path:
    """Where compiled kernels live: ``$NEUROGEN_CACHE_DIR``, else ``~/.cache/neurogen``."""
    env = os.environ.get("NEUROGEN_CACHE_DIR")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "neurogen"
    return base


def cxx() -> str:
    """The host C++ compiler command, or raise :class:`BackendUnavailableError`."""
    name = os.environ.get("CXX", "c++")
    path = shutil.which(name)
    if path is None:
        raise BackendUnavailableError(
            f"no C++ compiler found (looked for {name!r}; set $CXX or install g++, e.g. "
            "'apt-get install g++'); use backend='torch' meanwhile")
    return path


@functools.lru_cache(maxsize=None)
def _compiler_id(path: str) -> str:
    out = subprocess.run([path, "--version"], capture_output=True, text=True)
    return out.stdout.splitlines()[0] if out.stdout else path


def _cpu_key(source: str, compiler: str) -> str:
    text = "\0".join([source, compiler, _compiler_id(compiler), " ".join(CPU_FLAGS)])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def compile_cpp(source: str, name: str):
    """Compile (or load from cache) a C++ kernel and return its ctypes function."""
    compiler = cxx()
    key = _cpu_key(source, compiler)
    with _lock:
        if key in _loaded:
            return getattr(_loaded[key], name)
        folder = cache_dir() / "cpu"
        folder.mkdir(parents=True, exist_ok=True)
        lib_path = folder / f"{key}.so"
        lib = None
        if lib_path.exists():
            try:
                lib = ctypes.CDLL(str(lib_path))
                getattr(lib, name)
            except (OSError, AttributeError):
                lib = None  # a truncated or foreign file is a miss: rebuild it
        if lib is None:
            _build(source, compiler, folder, lib_path)
            lib = ctypes.CDLL(str(lib_path))
        _loaded[key] = lib
        return getattr(lib, name)


def _build(source, compiler, folder, lib_path):
    with tempfile.TemporaryDirectory(dir=folder, prefix=".build-") as tmp:
        src = Path(tmp) / "kernel.cpp"
        src.write_text(source)
        out = Path(tmp) / "kernel.so"
        proc = subprocess.run([compiler, *CPU_FLAGS, str(src), "-o", str(out)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise CompileError(f"the C++ compiler {compiler} failed on a generated kernel",
                               source=source, log=proc.stderr)
        os.replace(out, lib_path)  # atomic: readers see the old file or the whole new one


# ---- CUDA ---------------------------------------------------------------------------
def _cupy():
    try:
        import cupy
    except ImportError:
        raise BackendUnavailableError(
            "the CUDA backend needs CuPy: pip install 'neurogen[cuda12]' (or [cuda13])") from None
    return cupy


def cuda_include_dirs():
    """Folders holding ``cuda_fp16.h`` (from the nvidia-cuda-runtime wheel or a toolkit)."""
    dirs = []
    try:
        import nvidia.cuda_runtime as rt
        dirs += [os.path.join(p, "include") for p in rt.__path__]
    except ImportError:
        pass
    for root in (os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if root:
            dirs.append(os.path.join(root, "include"))
    return [d for d in dirs if os.path.exists(os.path.join(d, "cuda_fp16.h"))]


def nvrtc_options(arch: str = None):
    opts = ["--std=c++17"] + [f"-I{d}" for d in cuda_include_dirs()[:1]]
    if arch:
        opts.append(f"--gpu-architecture={arch}")
    return opts


def compile_ptx(source: str, arch: str = "compute_80") -> str:
    """Compile CUDA source to PTX with NVRTC (no GPU needed). Raises :class:`CompileError`."""
    _cupy()
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


@functools.lru_cache(maxsize=None)
def _cuda_module(source: str, device: int):
    cupy = _cupy()
    with cupy.cuda.Device(device):
        try:
            mod = cupy.RawModule(code=source, options=tuple(nvrtc_options()), backend="nvrtc")
            mod.compile()
        except cupy.cuda.compiler.CompileException as exc:
            raise CompileError("NVRTC failed to compile a generated kernel", source=source,
                               log=str(exc)) from None
    return mod


def cuda_function(source: str, name: str, device: int):
    return _cuda_module(source, device).get_function(name)


# ---- launching ----------------------------------------------------------------------
def _ctype(arg, compute):
    if arg.role in ("in", "out"):
        return ctypes.c_void_p
    if arg.role == "scalar":
        return ctypes.c_float if compute == "float" else ctypes.c_double
    return ctypes.c_int if arg.role == "int32" else ctypes.c_int64


def launch_cpu(fn, args, values, compute, n, block):
    """Call a CPU kernel with ``values[name]`` for each :class:`Arg` (tensors or numbers).

    Neuron blocks are split over ``torch.get_num_threads()`` Python threads
    (ctypes releases the GIL during the call).
    """
    import torch
    if fn.argtypes is None:
        fn.argtypes = [_ctype(a, compute) for a in args] + [ctypes.c_int64, ctypes.c_int64]
        fn.restype = None
    packed = [_c_value(a, values[a.name]) for a in args]
    blocks = (n + block - 1) // block
    workers = max(1, min(torch.get_num_threads(), blocks))
    if workers == 1 or n * values["ng_T"] < 1 << 15:
        fn(*packed, 0, blocks)
        return
    bounds = [blocks * w // workers for w in range(workers + 1)]
    futures = [_pool(workers).submit(fn, *packed, lo, hi) for lo, hi in zip(bounds, bounds[1:])
               if hi > lo]
    for f in futures:
        f.result()


@functools.lru_cache(maxsize=None)
def _pool(workers):
    from concurrent.futures import ThreadPoolExecutor
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="neurogen")


def _c_value(arg, value):
    if arg.role in ("in", "out"):
        return ctypes.c_void_p(value.data_ptr())
    return value


def launch_cuda(fn, args, values, compute, n, device, block=256):
    import numpy as np
    import torch
    cupy = _cupy()
    scalar = np.float32 if compute == "float" else np.float64
    packed = []
    for a in args:
        v = values[a.name]
        if a.role in ("in", "out"):
            packed.append(np.uint64(v.data_ptr()))
        elif a.role == "scalar":
            packed.append(scalar(v))
        elif a.role == "int32":
            packed.append(np.int32(v))
        else:
            packed.append(np.int64(v))
    grid = ((n + block - 1) // block,)
    with cupy.cuda.Device(device):
        stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(device).cuda_stream)
        fn(grid, (block,), tuple(packed), stream=stream)


def warn_once(message: str, _seen=set()):
    if message not in _seen:
        _seen.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
