"""Compiling and launching generated kernels.

CPU: the host C++ compiler (``$CXX``, else ``c++``) builds a shared library,
cached on disk under :func:`cache_dir` with atomic writes and keyed by source,
compiler and flags; it is loaded with ctypes. CUDA: CuPy's ``RawModule``
(NVRTC) compiles, and CuPy's own cubin cache keeps the result; kernels launch
on torch's current stream, on torch memory, with no copies. Both launchers
take their argument order from :func:`neurogen.codegen.kernel_args`.
"""
import atexit
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

# `omp simd` pragmas vectorise the neuron loop. Threads: see cpu_threading().
CPU_FLAGS = ("-O3", "-march=native", "-std=c++17", "-fPIC", "-shared", "-fopenmp-simd",
             "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math")
# The same, with OpenMP's parallel loop over neuron blocks enabled (cpu_threading "openmp").
CPU_OPENMP_FLAGS = tuple(f for f in CPU_FLAGS if f != "-fopenmp-simd") + ("-fopenmp",)
# Float kernels let the compiler fuse a * b + c into FMAs (about 4% of the Izhikevich
# training step's kernel time, PERF_NOTES.md 18); double kernels stay unfused, so they
# give the same bits as the emulated CUDA kernels built with CPU_FLAGS.
CPU_FMA_FLAGS, CPU_OPENMP_FMA_FLAGS = (
    tuple("-ffp-contract=fast" if f == "-ffp-contract=off" else f for f in flags)
    for flags in (CPU_FLAGS, CPU_OPENMP_FLAGS))
_lock = threading.Lock()
_loaded = {}
_functions = {}
generation = 0  # bumped by forget_kernels(); holders of kernel handles re-fetch on change


def forget_kernels():
    """Drop every kernel handle this process holds, as if it had just started: the next
    call looks kernels up again (disk cache, then compiler). Loaded libraries stay mapped."""
    global generation
    with _lock:
        _loaded.clear()
        _functions.clear()
        generation += 1


def cache_dir() -> Path:
    """Where compiled kernels live: ``$NEUROGEN_CACHE_DIR``, else ``~/.cache/neurogen``."""
    env = os.environ.get("NEUROGEN_CACHE_DIR")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "neurogen"
    return base


def cxx() -> str:
    """The host C++ compiler command, or raise :class:`BackendUnavailableError`."""
    return _find_cxx(os.environ.get("CXX", "c++"), os.environ.get("PATH", ""))


@functools.lru_cache(maxsize=8)
def _find_cxx(name: str, search_path: str) -> str:
    path = shutil.which(name, path=search_path)
    if path is None:
        raise BackendUnavailableError(
            f"no C++ compiler found (looked for {name!r}; set $CXX or install g++, e.g. "
            "'apt-get install g++'); use backend='torch' meanwhile")
    return path


@functools.lru_cache(maxsize=None)
def _compiler_id(path: str) -> str:
    out = subprocess.run([path, "--version"], capture_output=True, text=True)
    return out.stdout.splitlines()[0] if out.stdout else path


def _cpu_key(source: str, compiler: str, flags) -> str:
    text = "\0".join([source, compiler, _compiler_id(compiler), " ".join(flags)])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@functools.lru_cache(maxsize=None)
def cpu_threading() -> str:
    """How the CPU kernels use several cores: ``"openmp"`` or ``"pool"``.

    ``"openmp"`` when torch runs its own CPU ops on GNU OpenMP and ``libgomp.so.1`` is
    loaded (the Linux wheels of recent torch): the kernels are built with ``-fopenmp`` and
    their ``omp parallel for`` over neuron blocks runs on torch's own OpenMP threads.
    A second pool beside torch's would compete with its workers, which spin for a while
    after every parallel torch op (on the 2-core CI machine that doubled kernel times).
    Otherwise ``"pool"``: blocks are split over a small Python thread pool (ctypes
    releases the GIL). ``$NEUROGEN_CPU_THREADING`` (``openmp``/``pool``) overrides.
    """
    forced = os.environ.get("NEUROGEN_CPU_THREADING")
    if forced is not None:
        if forced not in ("openmp", "pool"):
            raise ValueError(f"$NEUROGEN_CPU_THREADING must be 'openmp' or 'pool', not {forced!r}")
        return forced
    import torch
    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return "pool"
    # A kernel built with -fopenmp needs "libgomp.so.1"; the loader hands it the copy torch
    # already loaded only under that name (some wheels ship a renamed libgomp-<hash>.so.1,
    # next to which ours would start a second runtime).
    try:
        with open("/proc/self/maps") as f:
            loaded = any(line.rstrip().endswith("/libgomp.so.1") for line in f)
    except OSError:
        loaded = False
    return "openmp" if loaded else "pool"


def compile_kernel(source: str, name: str, fma: bool = False):
    """Compile a CPU neuron kernel for :func:`cpu_threading`. Returns the ctypes function,
    with ``ng_openmp`` telling whether it runs its own OpenMP loop (see :func:`launch_cpu`).
    ``fma``: let the compiler contract ``a * b + c`` into fused multiply-adds (float
    kernels; results then depend on where the compiler fuses).

    When the compiler cannot build with ``-fopenmp`` (e.g. ``CXX=clang++`` without
    libomp) the kernel is built without it, with one warning, and runs on the Python
    thread pool; a source that does not compile either way raises :class:`CompileError`."""
    flags, openmp_flags = ((CPU_FMA_FLAGS, CPU_OPENMP_FMA_FLAGS) if fma
                           else (CPU_FLAGS, CPU_OPENMP_FLAGS))
    if cpu_threading() == "openmp" and not _openmp_failed:
        try:
            fn = compile_cpp(source, name, openmp_flags)
            fn.ng_openmp = True
            return fn
        except CompileError as exc:
            fn = compile_cpp(source, name, flags)  # raises if the source is at fault
            _openmp_failed.append(exc)
            log = (exc.log or "").strip().splitlines() or [str(exc).splitlines()[0]]
            warn_once(f"neurogen: {cxx()} cannot build the CPU kernels with -fopenmp "
                      f"({log[-1]}); they run on a "
                      "Python thread pool instead, which competes with torch's OpenMP threads "
                      "(slower in training loops). Install the compiler's OpenMP runtime or "
                      "use g++ (set $CXX)")
    fn = compile_cpp(source, name, flags)
    fn.ng_openmp = False
    return fn


_openmp_failed = []  # the CompileError that made this process give up on -fopenmp


def compile_cpp(source: str, name: str, flags=CPU_FLAGS):
    """Compile (or load from cache) a C++ kernel and return its ctypes function."""
    compiler = cxx()
    fast = (source, name, tuple(flags), compiler)
    if fast in _functions:
        return _functions[fast]
    _functions[fast] = fn = _compile_cpp(source, name, tuple(flags), compiler)
    return fn


def _compile_cpp(source, name, flags, compiler):
    key = _cpu_key(source, compiler, flags)
    with _lock:
        if key in _loaded:
            return getattr(_loaded[key], name)
        lib_path = cache_dir() / "cpu" / f"{key}.so"
        lib = _load(lib_path, name, key)
        if lib is None:
            lib_path = _writable_folder() / f"{key}.so"
            _build(source, compiler, flags, lib_path, key)
            lib = _load(lib_path, name, key)
            if lib is None:
                raise CompileError(f"the kernel built at {lib_path} does not load or lacks "
                                   f"{name!r}; remove the file and retry", source=source)
        _loaded[key] = lib
        return getattr(lib, name)


_SEAL = b"\0neurogen-kernel-cache-v1:"


def _seal(data: bytes, key: str) -> bytes:
    # trailing bytes after an ELF image do not disturb dlopen; they let a reader check
    # the file is whole and ours before mapping it (a truncated .so can SIGBUS on load)
    return data + _SEAL + key.encode() + hashlib.sha256(data).hexdigest().encode()


def _intact(lib_path: Path, key: str) -> bool:
    try:
        data = lib_path.read_bytes()
    except OSError:
        return False
    tail = len(_SEAL) + len(key) + 64
    body, seal = data[:-tail], data[-tail:]
    return len(data) > tail and seal == _SEAL + key.encode() + hashlib.sha256(body).hexdigest().encode()


def _load(lib_path, name, key):
    """The library at ``lib_path`` if it is a whole neurogen artefact for ``key``, else None
    (truncated, corrupted, foreign or stale files are a miss, never loaded)."""
    if not _intact(lib_path, key):
        return None
    try:
        lib = ctypes.CDLL(str(lib_path))
        getattr(lib, name)
        return lib
    except (OSError, AttributeError):
        return None


_fallback = {}


def _writable_folder() -> Path:
    """``cache_dir()/cpu``, or (once warned) a private temporary folder when that one
    cannot be created or written (read-only home, $NEUROGEN_CACHE_DIR on a read-only mount)."""
    folder = cache_dir() / "cpu"
    if folder in _fallback:
        return _fallback[folder]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(dir=folder, prefix=".build-"))
        return folder
    except OSError as exc:
        private = Path(tempfile.mkdtemp(prefix="neurogen-cache-"))
        atexit.register(shutil.rmtree, private, ignore_errors=True)
        _fallback[folder] = private
        warn_once(f"neurogen: cannot write the kernel cache {folder} ({exc.strerror or exc}); "
                  f"compiling into the private folder {private} for this process. "
                  "Set $NEUROGEN_CACHE_DIR to a writable folder to keep kernels between runs")
        return private


def _build(source, compiler, flags, lib_path, key):
    with tempfile.TemporaryDirectory(dir=lib_path.parent, prefix=".build-") as tmp:
        src = Path(tmp) / "kernel.cpp"
        src.write_text(source)
        out = Path(tmp) / "kernel.so"
        proc = subprocess.run([compiler, *flags, str(src), "-o", str(out)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise CompileError(f"the C++ compiler {compiler} failed on a generated kernel",
                               source=source, log=proc.stderr)
        out.write_bytes(_seal(out.read_bytes(), key))
        os.replace(out, lib_path)  # atomic: readers see the old file or the whole new one


def clear_cache():
    """Remove neurogen's compiled CPU kernels (``cpu/*.so``) and leftover ``cpu/.build-*``
    folders under :func:`cache_dir`; other files are left alone. Returns the paths removed."""
    folder = cache_dir() / "cpu"
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".build-") and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.suffix == ".so" and path.is_file() and _is_key(path.stem):
            path.unlink(missing_ok=True)
        else:
            continue
        removed.append(path)
    try:
        folder.rmdir()  # only if nothing else is left in it
    except OSError:
        pass
    return removed


def _is_key(stem):
    return len(stem) == 32 and all(c in "0123456789abcdef" for c in stem)


# ---- CUDA ---------------------------------------------------------------------------
def _cupy():
    try:
        import cupy
    except ImportError:
        raise BackendUnavailableError(
            "the CUDA backend needs CuPy: pip install 'neurogen[cuda12]' (or [cuda13])") from None
    return cupy


def cuda_include_dirs(host: bool = False):
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
def _cuda_module(source: str, device):
    cupy = _cupy()
    with cupy.cuda.Device(device):
        try:
            mod = cupy.RawModule(code=source, options=tuple(nvrtc_options()), backend="nvrtc")
            mod.compile()
        except cupy.cuda.compiler.CompileException as exc:
            raise CompileError("NVRTC failed to compile a generated kernel", source=source,
                               log=str(exc)) from None
    return mod


def cuda_function(source: str, name: str, device):
    index = device.index if hasattr(device, "index") else device
    return _cuda_module(source, index or 0).get_function(name)


# ---- launching ----------------------------------------------------------------------
CUDA_BLOCK = 256


def launch_config(n: int, block: int = CUDA_BLOCK):
    """Grid and block of a one-thread-per-neuron launch (CUDA and emulated CUDA alike)."""
    return (n + block - 1) // block, block


class ArgPacker:
    """Turns named values into a kernel's argument list, ``[(kind, value)]`` in kernel order
    with kind one of ptr, f32, f64, i32, i64: the single place that does so; every
    launcher (CUDA, emulated CUDA, C++) converts these pairs.

    Built once per kernel and plan: the values in ``fixed`` (a plan's scalar parameters)
    are converted here, so a call only reads the tensors' pointers and the sizes (a
    training step packs two argument lists; PERF_NOTES.md 21)."""

    def __init__(self, args, fixed, compute):
        scalar = "f32" if compute == "float" else "f64"
        kinds = {"in": "ptr", "out": "ptr", "scalar": scalar, "int32": "i32"}
        self.kinds = [kinds.get(a.role, "i64") for a in args]
        self.template = [None] * len(args)
        self.slots = []  # (position, name, conversion) of the values given per call
        for i, (a, kind) in enumerate(zip(args, self.kinds)):
            convert = {"ptr": None, scalar: float}.get(kind, int)
            if kind == scalar and a.name in fixed:
                self.template[i] = float(fixed[a.name])
            else:
                self.slots.append((i, a.name, convert))

    def __call__(self, values):
        vals = self.template.copy()
        for i, name, convert in self.slots:
            v = values[name]
            vals[i] = v.data_ptr() if convert is None else convert(v)
        return list(zip(self.kinds, vals))


_CTYPES = {"ptr": ctypes.c_void_p, "f32": ctypes.c_float, "f64": ctypes.c_double,
           "i32": ctypes.c_int, "i64": ctypes.c_int64, "u32": ctypes.c_uint}


def _ctypes_call(fn, packed):
    if fn.argtypes is None:
        fn.argtypes = [_CTYPES[k] for k, _ in packed]
        fn.restype = None
    fn(*[v for _, v in packed])


def cpu_blocks(n: int, max_block: int, workers: int):
    """``(block size, number of blocks)`` for ``n`` neurons on ``workers`` threads: as
    few blocks as ``max_block`` allows, a multiple of ``workers`` (so a static split is
    even), of a size rounded up to 16 neurons (64-byte runs of float)."""
    per_worker_blocks = max(1, -(-n // (workers * max_block)))
    size = -(-n // (workers * per_worker_blocks))
    size = min(max_block, -(-size // 16) * 16)
    return size, -(-n // size)


def launch_cpu(fn, packed, n, max_block, T, openmp=False):
    """Call a C++ kernel on ``torch.get_num_threads()`` threads: its own OpenMP loop
    over neuron blocks (``openmp``, see :func:`cpu_threading`) or, otherwise, blocks
    split over Python threads (ctypes releases the GIL during the call). Blocks hold at
    most ``max_block`` neurons (the kernel's ``NG_BLOCK``); see :func:`cpu_blocks`. Each
    thread's block arrays (``fn.ng_array_bytes`` per neuron of a block: the kernel's
    ``NG_ARRAYS`` arrays of compute values) live in the calling thread's scratch buffer
    (:func:`_scratch`) rather than on the threads' stacks."""
    import torch
    workers = max(1, min(torch.get_num_threads(), -(-n // 16)))
    if n * T < 1 << 15:
        workers = 1  # too small to pay for waking threads
    size, blocks = cpu_blocks(n, max_block, workers)
    workers = min(workers, blocks)
    stride = fn.ng_array_bytes * size
    base = _scratch(workers * stride)
    packed = packed + [("i64", size)]
    if workers == 1 or openmp:
        _ctypes_call(fn, packed + [("i64", 0), ("i64", blocks), ("i32", workers),
                                   ("ptr", base)])
        return
    bounds = [blocks * w // workers for w in range(workers + 1)]
    futures = [_pool(workers).submit(_ctypes_call, fn, packed + [
                   ("i64", lo), ("i64", hi), ("i32", 1), ("ptr", base + w * stride)])
               for w, (lo, hi) in enumerate(zip(bounds, bounds[1:])) if hi > lo]
    for f in futures:
        f.result()


_scratch_local = threading.local()


def _scratch(nbytes: int) -> int:
    """Address of a 64-byte aligned buffer of at least ``nbytes`` that the calling thread
    reuses for every C++ kernel call (the kernels' per-thread block arrays; at most
    ``codegen.CPU_ARRAY_BUDGET`` per kernel thread). Kept, not freed and allocated per
    call: a fresh buffer cost page faults on every call. A launch from one Python thread
    finishes before that thread launches again, so one buffer per thread suffices."""
    held = getattr(_scratch_local, "held", None)  # (buffer, its address)
    if held is None or held[0].nbytes < nbytes:
        from .memory import aligned_empty
        buf = aligned_empty(max(nbytes, 1))
        held = _scratch_local.held = (buf, buf.ctypes.data)
    return held[1]


@functools.lru_cache(maxsize=None)
def _pool(workers):
    from concurrent.futures import ThreadPoolExecutor
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="neurogen")


def launch_emulated(fn, packed, n):
    """Run an emulated CUDA kernel: the same packed arguments behind (grid, block)."""
    grid, block = launch_config(n)
    _ctypes_call(fn, [("u32", grid), ("u32", block)] + packed)


def launch_cuda(fn, packed, n, device):
    """Launch on torch's current stream of ``device`` (no copies, no host sync)."""
    import numpy as np
    import torch
    cupy = _cupy()
    conv = {"ptr": np.uint64, "f32": np.float32, "f64": np.float64, "i32": np.int32,
            "i64": np.int64}
    grid, block = launch_config(n)
    with cupy.cuda.Device(device.index if hasattr(device, "index") else device):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # ExternalStream, CuPy >= 14
            stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(device).cuda_stream)
        fn((grid,), (block,), tuple(conv[k](v) for k, v in packed), stream=stream)


def warn_once(message: str, _seen=set()):
    if message not in _seen:
        _seen.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
