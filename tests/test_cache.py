"""The on-disk CPU kernel cache under faults: corrupted or foreign files, unwritable
folders, concurrent builders, and ``neurogen cache clear``/``path`` (issue 6)."""
import ctypes
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import torch


import neurogen as ng
from neurogen import cache as ng_cache
from neurogen.cli import main
from neurogen.targets import host_compiler

from conftest import needs_cxx

pytestmark = needs_cxx


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh $NEUROGEN_CACHE_DIR and empty in-process caches (restored afterwards)."""
    monkeypatch.setenv("NEUROGEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(host_compiler.LIBRARIES, "_fallback", {})
    ng.forget_kernels()  # no loaded library, function or kernel handle kept from before
    yield tmp_path / "cache"
    ng.forget_kernels()


def kernel(value):
    """A tiny C++ kernel returning ``value``, under a name no other test uses."""
    name = f"ng_test_{uuid.uuid4().hex[:12]}"
    return name, f'extern "C" double {name}() {{ return {value}; }}\n'


def call(source, name):
    fn = host_compiler.compile_cpp(source, name)
    fn.restype = ctypes.c_double
    return fn()


def key_of(source):
    return host_compiler.library_key(source, host_compiler.cxx(), host_compiler.CPU_FLAGS)


def path_of(source):
    return host_compiler.LIBRARIES.path(key_of(source))


def built(source, name):
    """Build ``source`` in a throwaway folder and return the sealed artefact's bytes."""
    path = path_of(source)
    out = _mkdir(path.parent / ".scratch") / "kernel.so"
    host_compiler._build(source, host_compiler.cxx(), host_compiler.CPU_FLAGS, out)
    data = ng_cache.LibraryCache.seal(out.read_bytes(), key_of(source))
    shutil.rmtree(path.parent / ".scratch")
    return data


def _mkdir(p):
    p.mkdir(parents=True, exist_ok=True)
    return p


def plant(source, data):
    path = path_of(source)
    _mkdir(path.parent)
    path.write_bytes(data)
    return path


# ---- a bad file at the cache path is a miss ---------------------------------------------
@pytest.mark.parametrize("bad", ["garbage", "empty", "truncated", "unsealed", "flipped", "text"])
def test_corrupted_artefact_is_rebuilt(cache, bad):
    name, source = kernel(1.25)
    whole = built(source, name)
    data = {"garbage": os.urandom(4096), "empty": b"", "truncated": whole[:len(whole) // 3],
            "unsealed": whole[:whole.rindex(ng_cache.SEAL)],  # ELF intact, seal gone
            "flipped": whole[:100] + bytes([whole[100] ^ 1]) + whole[101:],
            "text": b"not a shared library\n"}[bad]
    path = plant(source, data)
    assert call(source, name) == 1.25
    assert path.read_bytes() != data and path.stat().st_size > 1000


def test_foreign_library_without_the_symbol_is_rebuilt(cache):
    other_name, other = kernel(7.0)
    name, source = kernel(2.5)
    plant(source, built(other, other_name))  # a valid library, but not this kernel
    assert call(source, name) == 2.5


def test_stale_library_with_the_symbol_but_another_key_is_rebuilt(cache):
    name, old = kernel(3.0)
    new = old.replace("3.0", "4.0")  # same function name, different body -> different key
    plant(new, built(old, name))
    assert call(new, name) == 4.0


def test_valid_artefact_is_reused_without_compiling(cache, monkeypatch):
    name, source = kernel(5.5)
    plant(source, built(source, name))
    monkeypatch.setattr(host_compiler, "_build", lambda *a: pytest.fail("rebuilt a valid artefact"))
    assert call(source, name) == 5.5


# ---- unwritable cache folders fall back to a private temporary folder -------------------
def _fallback_works(monkeypatch, cache_path):
    monkeypatch.setenv("NEUROGEN_CACHE_DIR", str(cache_path))
    name, source = kernel(6.5)
    with pytest.warns(RuntimeWarning, match="cannot write the kernel cache"):
        assert call(source, name) == 6.5
    private = host_compiler.LIBRARIES._fallback[Path(cache_path) / "cpu"]
    assert list(private.glob("*.so")) and not str(private).startswith(str(cache_path))
    # the second new kernel reuses the fallback without another warning
    name2, source2 = kernel(8.5)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert call(source2, name2) == 8.5


def test_uncreatable_cache_dir_falls_back(cache, tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("x")
    _fallback_works(monkeypatch, tmp_path / "a_file" / "cache")


def test_cache_dir_whose_cpu_folder_is_a_file_falls_back(cache, tmp_path, monkeypatch):
    _mkdir(tmp_path / "odd")
    (tmp_path / "odd" / "cpu").write_text("x")
    _fallback_works(monkeypatch, tmp_path / "odd")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders anyway")
def test_read_only_cache_dir_falls_back_and_still_reads(cache, tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    name, source = kernel(9.0)
    monkeypatch.setenv("NEUROGEN_CACHE_DIR", str(ro))
    plant(source, built(source, name))  # an artefact built before the folder became read-only
    os.chmod(ro / "cpu", 0o555)
    os.chmod(ro, 0o555)
    try:
        assert call(source, name) == 9.0  # existing artefacts are still used
        _fallback_works(monkeypatch, ro)
    finally:
        os.chmod(ro, 0o755)
        os.chmod(ro / "cpu", 0o755)


def test_module_runs_with_unwritable_cache(tmp_path):
    (tmp_path / "a_file").write_text("x")
    script = textwrap.dedent("""
        import warnings, torch, neurogen as ng
        from neurogen.neuron import LIBRARY
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            node = LIBRARY["LIFNode"].spec.module(step_mode="m", backend="cpu")
            s = node(torch.full((4, 3), 1.5, dtype=torch.float64))
        print(int(s.sum()), sum("cannot write the kernel cache" in str(m.message) for m in w))
    """)
    env = dict(os.environ, NEUROGEN_CACHE_DIR=str(tmp_path / "a_file" / "c"))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["6", "1"]


# ---- concurrent builders ------------------------------------------------------------------
BUILD = textwrap.dedent("""
    import sys, time, torch, neurogen as ng
    model = ng.NeuronModel("race_{tag}", states={{"v": 0.0}}, params={{"tau": 2.0}},
                           charge={{"v": "v + (x - v) / tau"}}, fire="v - 1",
                           reset={{"v": "(1 - spike_d) * v"}})
    while time.time() < {start}:  # start together
        time.sleep(0.005)
    x = torch.linspace(0, 3, 40, dtype=torch.float64).repeat(6, 1).requires_grad_()
    s = model.module(step_mode="m", backend="cpu")(x)
    s.sum().backward()
    print(int(s.sum()), float(x.grad.sum()))
""")


def test_four_processes_building_the_same_new_model(tmp_path):
    import time
    script = BUILD.format(tag=uuid.uuid4().hex[:8], start=time.time() + 3.0)
    env = dict(os.environ, NEUROGEN_CACHE_DIR=str(tmp_path / "cache"))
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    assert len({out for out, _ in outs}) == 1, outs
    folder = tmp_path / "cache" / "cpu"
    libs = sorted(folder.glob("*.so"))
    assert len(libs) == 2  # one forward and one backward artefact, each written once
    assert not list(folder.glob(".build-*")), "temporary build folders left behind"
    for lib in libs:
        ctypes.CDLL(str(lib))  # each artefact is a whole library
    # a fifth process reuses them
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.stdout == outs[0][0]
    assert sorted(folder.glob("*.so")) == libs


# ---- neurogen cache clear / path -----------------------------------------------------------
def test_cache_path_prints_the_folder(cache, capsys):
    assert main(["cache", "path"]) == 0
    assert capsys.readouterr().out.strip() == str(cache)


def test_cache_clear_removes_only_neurogen_files(cache, capsys):
    name, source = kernel(1.0)
    assert call(source, name) == 1.0
    cpu = cache / "cpu"
    ours = list(cpu.glob("*.so"))
    assert len(ours) == 1
    _mkdir(cpu / ".build-leftover") .joinpath("kernel.cpp").write_text("// killed mid-build")
    (cpu / "notes.txt").write_text("mine")
    (cpu / "libother.so").write_text("someone else's")
    (cache / "settings.json").write_text("{}")
    _mkdir(cache / "other")
    assert main(["cache", "clear"]) == 0
    assert "removed 2" in capsys.readouterr().out
    assert sorted(p.name for p in cpu.iterdir()) == ["libother.so", "notes.txt"]
    assert (cache / "settings.json").exists() and (cache / "other").is_dir()


def test_cache_clear_then_rebuild(cache, capsys):
    x = torch.full((3, 5), 1.5, dtype=torch.float64)
    from neurogen.neuron import LIBRARY
    node = LIBRARY["LIFNode"].spec.module(step_mode="m", backend="cpu")
    first = node(x)
    assert list((cache / "cpu").glob("*.so"))
    assert main(["cache", "clear"]) == 0
    assert not (cache / "cpu").exists()  # empty once neurogen's files are gone
    assert main(["cache", "clear"]) == 0  # clearing an empty cache is fine
    ng.forget_kernels()  # as in a new process
    node.reset()
    assert torch.equal(node(x), first)
    assert list((cache / "cpu").glob("*.so"))


# ---- the in-process cache (cache.Memory) ----------------------------------------------------
def test_memory_builds_once_per_key_and_drops_what_a_forget_overtook():
    import threading
    memory = ng_cache.Memory("test", maxsize=2)
    builds = []
    started, release = threading.Event(), threading.Event()

    def slow():
        builds.append("slow")
        started.set()
        release.wait(10)
        return "stale"
    t = threading.Thread(target=lambda: memory.get("k", slow))
    t.start()
    started.wait(10)
    memory.forget()            # e.g. forget_kernels() while a kernel compiles
    release.set()
    t.join()
    assert memory.get("k", lambda: "fresh") == "fresh"  # the stale build was not kept
    with pytest.raises(ZeroDivisionError):
        memory.get("bad", lambda: 1 / 0)
    assert memory.get("bad", lambda: "ok") == "ok"      # a failed build leaves nothing
    memory.get("third", lambda: 3)
    assert len(memory) == 2                             # bounded: the oldest went
