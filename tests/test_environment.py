"""Broken environments give typed, actionable errors; 'auto' falls back loudly."""
import warnings

import pytest
import torch

import neurogen as ng
from neurogen.errors import warn_once
from neurogen.targets import cuda, host_compiler


@pytest.fixture
def no_compiler(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-neurogen")
    host_compiler._find_cxx.cache_clear()
    ng.forget_kernels()
    yield
    host_compiler._find_cxx.cache_clear()


def test_cpu_backend_without_compiler_raises_with_hint(no_compiler):
    node = ng.neuron.LIFNode(step_mode="m", backend="cpu")
    with pytest.raises(ng.BackendUnavailableError, match="C\\+\\+ compiler.*CXX"):
        node(torch.rand(3, 4))


def test_auto_backend_without_compiler_warns_and_falls_back(no_compiler):
    warn_once.__defaults__[0].clear()  # forget earlier warnings
    node = ng.neuron.LIFNode(step_mode="m")
    x = torch.rand(5, 4) * 3
    with pytest.warns(RuntimeWarning, match="falling back to the torch backend"):
        out = node(x)
    ref = ng.neuron.LIFNode(step_mode="m", backend="torch")(x)
    assert torch.equal(out, ref)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # only once
        node.reset()
        node(x)


def test_cpp_compile_error_has_numbered_source_and_log():
    with pytest.raises(ng.CompileError) as info:
        host_compiler.compile_cpp('extern "C" void f() { this is not C++; }', "f")
    assert "error" in info.value.log.lower()
    assert "    1  extern" in str(info.value)


def test_cuda_backend_needs_cuda_tensors():
    node = ng.neuron.LIFNode(step_mode="m", backend="cuda")
    with pytest.raises(ValueError, match="CUDA tensors"):
        node(torch.rand(2, 3))


def test_cupy_missing_is_backend_unavailable(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "cupy" or name.startswith("cupy."):
            raise ImportError("no cupy")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ng.BackendUnavailableError, match="pip install 'neurogen\\[cuda12\\]'"):
        cuda.cupy()


def test_every_template_file_is_package_data():
    # a file under neurogen/templates that no package-data pattern names is missing from a
    # wheel (the emulation shim, templates/cuda_emulation_shim.h, once was)
    import fnmatch
    import pathlib
    import re
    root = pathlib.Path(__file__).resolve().parents[1]
    # pyproject.toml's [tool.setuptools.package-data] line (no tomllib before Python 3.11)
    section = (root / "pyproject.toml").read_text().split("[tool.setuptools.package-data]")[1]
    patterns = re.findall(r'"([^"]+)"', re.search(r"^neurogen = \[(.*)\]$", section, re.M)[1])
    files = [p.relative_to(root / "neurogen").as_posix()
             for p in (root / "neurogen" / "templates").iterdir() if p.is_file()]
    assert files
    unpackaged = [f for f in files if not any(fnmatch.fnmatch(f, pat) for pat in patterns)]
    assert not unpackaged, f"not in package-data: {unpackaged}"


def test_auto_takes_the_compiler_once_it_is_there(monkeypatch):
    x = torch.rand(3, 4)
    monkeypatch.setenv("CXX", "no-such-compiler-neurogen")
    warn_once.__defaults__[0].clear()
    ng.forget_kernels()  # "auto" chooses anew (and warns again)
    with pytest.warns(RuntimeWarning, match="falling back to the torch backend"):
        assert ng.targets.resolve("auto", x).name == "torch"
    monkeypatch.delenv("CXX")  # the compiler is back: no forget_kernels needed
    assert ng.targets.resolve("auto", x).name == "cpu"
