"""The host C++ compiler: building a kernel's source into a shared library (through the
disk cache, :class:`neurogen.cache.LibraryCache`) and loading it with ctypes. Used by
the ``cpu`` and ``cuda-emulated`` targets.

The compiler is ``$CXX``, else ``c++``. A library's cache key covers the source, the
compiler's path and ``--version`` line and the flags; a compile error carries the
numbered source and the compiler's log (:class:`neurogen.CompileError`).
"""
import ctypes
import functools
import os
import shutil
import subprocess

from .. import cache
from ..errors import BackendUnavailableError, CompileError, warn_once

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

LIBRARIES = cache.LibraryCache("cpu")
_loaded = cache.Memory("loaded libraries")     # key -> ctypes.CDLL
_functions = cache.Memory("kernel functions")  # (source, name, flags, compiler) -> function


def cxx() -> str:
    """The host C++ compiler command, or raise :class:`BackendUnavailableError`."""
    return _find_cxx(*environment())


def environment():
    """What finding the compiler depends on: ``($CXX or "c++", $PATH)``."""
    env = os.environ
    return env.get("CXX", "c++"), env.get("PATH", "")


def missing():
    """Why there is no host compiler (the message), or None when there is one."""
    try:
        cxx()
    except BackendUnavailableError as exc:
        return str(exc)
    return None


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


def library_key(source: str, compiler: str, flags) -> str:
    return LIBRARIES.key(source, compiler, _compiler_id(compiler), " ".join(flags))


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


_openmp_failed = []  # the CompileError that made this process give up on -fopenmp


def compile_kernel(source: str, name: str, fma: bool = False):
    """Compile a CPU neuron kernel for :func:`cpu_threading`: ``(function, openmp)``, with
    ``openmp`` telling whether it runs its own OpenMP loop. ``fma``: let the compiler
    contract ``a * b + c`` into fused multiply-adds (float kernels).

    When the compiler cannot build with ``-fopenmp`` (e.g. ``CXX=clang++`` without
    libomp) the kernel is built without it, with one warning, and runs on the Python
    thread pool; a source that does not compile either way raises :class:`CompileError`."""
    flags, openmp_flags = ((CPU_FMA_FLAGS, CPU_OPENMP_FMA_FLAGS) if fma
                           else (CPU_FLAGS, CPU_OPENMP_FLAGS))
    if cpu_threading() == "openmp" and not _openmp_failed:
        try:
            return compile_cpp(source, name, openmp_flags), True
        except CompileError as exc:
            fn = compile_cpp(source, name, flags)  # raises if the source is at fault
            _openmp_failed.append(exc)
            log = (exc.log or "").strip().splitlines() or [str(exc).splitlines()[0]]
            warn_once(f"neurogen: {cxx()} cannot build the CPU kernels with -fopenmp "
                      f"({log[-1]}); they run on a "
                      "Python thread pool instead, which competes with torch's OpenMP threads "
                      "(slower in training loops). Install the compiler's OpenMP runtime or "
                      "use g++ (set $CXX)")
            return fn, False
    return compile_cpp(source, name, flags), False


def compile_cpp(source: str, name: str, flags=CPU_FLAGS):
    """Compile (or load from the cache) C++ source and return its ctypes function ``name``."""
    compiler = cxx()
    flags = tuple(flags)
    return _functions.get((source, name, flags, compiler),
                          lambda: _library(source, name, flags, compiler))


def _library(source, name, flags, compiler):
    key = library_key(source, compiler, flags)

    def build():
        lib = LIBRARIES.load(key, lambda path: _open(path, name))
        if lib is None:
            path = LIBRARIES.save(key, lambda out: _build(source, compiler, flags, out))
            lib = _open(path, name)
            if lib is None:
                raise CompileError(f"the kernel built at {path} does not load or lacks "
                                   f"{name!r}; remove the file and retry", source=source)
        return lib
    return getattr(_loaded.get(key, build), name)


def _open(path, name):
    """The library at ``path`` with the function ``name``, or None."""
    try:
        lib = ctypes.CDLL(str(path))
        getattr(lib, name)
        return lib
    except (OSError, AttributeError):
        return None


def _build(source, compiler, flags, out):
    src = out.with_name("kernel.cpp")
    src.write_text(source)
    proc = subprocess.run([compiler, *flags, str(src), "-o", str(out)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise CompileError(f"the C++ compiler {compiler} failed on a generated kernel",
                           source=source, log=proc.stderr)


def clear_cache():
    """Remove neurogen's compiled CPU kernels (``cpu/*.so``) and leftover ``cpu/.build-*``
    folders under :func:`neurogen.cache.cache_dir`; other files are left alone. Returns the
    paths removed."""
    return LIBRARIES.clear()


_CTYPES = {"ptr": ctypes.c_void_p, "f32": ctypes.c_float, "f64": ctypes.c_double,
           "i32": ctypes.c_int, "i64": ctypes.c_int64, "u32": ctypes.c_uint}


def call(fn, packed):
    """Call a ctypes kernel with ``[(kind, value)]`` arguments."""
    if fn.argtypes is None:
        fn.argtypes = [_CTYPES[k] for k, _ in packed]
        fn.restype = None
    fn(*[v for _, v in packed])


__all__ = ["cxx", "cpu_threading", "compile_kernel", "compile_cpp", "clear_cache", "call",
           "CPU_FLAGS", "CPU_FMA_FLAGS", "CPU_OPENMP_FLAGS", "CPU_OPENMP_FMA_FLAGS"]
