"""Every neuron loop of the emitted C++ kernels vectorises (GCC's own report).

A loop GCC leaves scalar runs several times slower (PERF_NOTES.md 2, 3, 17: a trapping
comparison, a conditional load, a call of ``fmaxf``), and nothing else would notice: the
results stay right. So each ``#pragma omp simd`` loop of the library kernels must appear
in ``-fopt-info-vec-optimized`` as vectorised."""
import re
import subprocess

import pytest

import neurogen as ng
from neurogen.targets import host_compiler
from neurogen.neuron import LIBRARY

from conftest import needs_cxx


def _is_gcc():
    try:
        macros = subprocess.run([host_compiler.cxx(), "-dM", "-E", "-x", "c++", "/dev/null"],
                                capture_output=True, text=True).stdout
    except (ng.BackendUnavailableError, OSError):
        return False
    return "__GNUC__" in macros and "__clang__" not in macros


pytestmark = [needs_cxx, pytest.mark.skipif(not _is_gcc(), reason="reads GCC's report")]


def simd_loops_not_vectorised(source, tmp_path, fma=True):
    """Line numbers of ``omp simd`` loops that GCC did not vectorise."""
    path = tmp_path / "kernel.cpp"
    path.write_text(source)
    flags = [f for f in (host_compiler.CPU_FMA_FLAGS if fma else host_compiler.CPU_FLAGS) if f != "-shared"]
    proc = subprocess.run([host_compiler.cxx(), *flags, "-c", str(path), "-o", str(tmp_path / "k.o"),
                           "-fopt-info-vec-optimized"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    vectorised = {int(m) for m in re.findall(r"kernel\.cpp:(\d+):\d+: optimized: loop vectorized",
                                             proc.stderr)}
    lines = source.splitlines()
    # 1-based line of each simd loop's ``for``; GCC reports a loop at one of its statements
    loops = [i + 2 for i, line in enumerate(lines) if line.strip().startswith("#pragma omp simd")]
    assert loops, "no omp simd loop in the kernel"
    return [n for n in loops if not vectorised & set(range(n, _loop_end(lines, n) + 1))]


def _loop_end(lines, n):
    """The 1-based line of the ``}`` closing the ``for`` on line ``n``."""
    indent = len(lines[n - 1]) - len(lines[n - 1].lstrip())
    for i in range(n, len(lines)):
        if lines[i].strip() == "}" and len(lines[i]) - len(lines[i].lstrip()) == indent:
            return i + 1
    return len(lines)


@pytest.mark.parametrize("name", sorted(LIBRARY))
@pytest.mark.parametrize("kind", ["forward", "backward"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_library_kernels_vectorise(name, kind, dtype, tmp_path):
    # float64 kernels are left out on purpose: they call libm's scalar exp (no libmvec
    # variant is declared for double), so they give the same bits as the emulated CUDA
    # kernels; they are the exact reference mode, not the fast one
    source = ng.targets.render(LIBRARY[name].spec, "cpp", kind, dtype)
    assert simd_loops_not_vectorised(source, tmp_path) == []


@pytest.mark.parametrize("surrogate", [cls() for cls in ng.surrogate.LIBRARY],
                         ids=lambda s: type(s).__name__)
def test_every_surrogate_backward_vectorises(surrogate, tmp_path):
    source = ng.targets.render(LIBRARY["IzhikevichNode"].spec, "cpp", "backward", "float32",
                               surrogate=surrogate)
    assert simd_loops_not_vectorised(source, tmp_path) == []


def test_the_check_sees_a_scalar_loop(tmp_path):
    # fmaxf called in the loop (how Max printed before ng_fmax) keeps GCC from vectorising
    source = ng.targets.render(LIBRARY["IzhikevichNode"].spec, "cpp", "backward", "float32",
                               surrogate=ng.surrogate.PiecewiseQuadratic())
    assert "ng_fmax(" in source
    scalar = source.replace("ng_fmax(0.0F,", "fmaxf(0.0F,")
    assert scalar != source
    assert simd_loops_not_vectorised(scalar, tmp_path) != []


@pytest.mark.parametrize("name", ["max_floor", "where_counter", "everything", "clamp_params",
                                  "refractory_graded"])
@pytest.mark.parametrize("kind", ["forward", "backward"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_branches_and_clamps_vectorise(name, kind, dtype, tmp_path):
    from test_branches import model
    source = ng.targets.render(model(name), "cpp", kind, dtype, learnable=("tau",))
    assert simd_loops_not_vectorised(source, tmp_path) == []
