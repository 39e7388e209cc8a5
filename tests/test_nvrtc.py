"""Every emitted CUDA kernel compiles with NVRTC (no GPU needed)."""
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import structures

import neurogen as ng
from neurogen.lower import DTYPES
from neurogen.neuron import LIBRARY, adaptive_spec

pytest.importorskip("cupy")
from neurogen.targets.cuda import compile_ptx  # noqa: E402

CONFIGS = [
    dict(),
    dict(store_v_seq=True, grad_v_seq=True, detach_reset=True),
    dict(learnable=("v_threshold",), param_kinds=(("v_threshold", "neuron"),),
         surrogate=ng.surrogate.PiecewiseLeakyReLU()),
]


def models():
    out = {name: cls.spec for name, cls in LIBRARY.items()}
    out["AdaptBaseNode(custom charge)"] = adaptive_spec("adaptive_lif", "v + (x - w - v) / tau",
                                                        {"tau": 2.0})
    return out


@pytest.mark.parametrize("arch", ["compute_70", "compute_80", "compute_90"])
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_library_kernels_compile(arch, dtype, adex):
    for name, model in {**models(), "adex example": adex}.items():
        for cfg in CONFIGS if arch == "compute_80" else CONFIGS[:1]:
            for kind in ("forward", "backward"):
                src = model.cuda_source(kind, dtype, **cfg)
                ptx = compile_ptx(src, arch)
                assert ".entry ng_" in ptx, f"{name} {kind} {dtype}: no kernel entry in PTX"
                if dtype != "float64":
                    # float kernels must not promote to double anywhere
                    assert not re.search(r"\.f64\b", ptx), f"{name} {kind} {dtype} uses double"


def test_compile_error_carries_source_and_log():
    with pytest.raises(ng.CompileError) as info:
        compile_ptx('extern "C" __global__ void k() { undefined_thing(); }', "compute_80")
    err = info.value
    assert "undefined_thing" in err.log
    assert "    1  extern" in str(err)


@pytest.mark.skipif(__import__("shutil").which("ptxas") is None, reason="ptxas not installed")
def test_neurogen_check_reports_no_spills_for_any_library_kernel():
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "neurogen", "check", "--arch", "sm_80", "sm_90"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith("ok ")]
    assert len(rows) == len(LIBRARY) * len(DTYPES) * 2 * 2   # models x dtypes x kinds x archs
    for row in rows:
        assert "registers" in row and "spill 0 B" in row, row


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(structures(), st.sampled_from(list(DTYPES)))
def test_generated_structures_compile(case, dtype):
    """Generated structures (reset-only and constant states among them, tests/strategies.py)
    compile with NVRTC; float kernels use no double instruction."""
    model, surrogate, detach, kinds = case
    learnable = tuple(k for k, v in kinds.items() if v.startswith("learnable"))
    param_kinds = tuple((k, "neuron") for k, v in kinds.items() if v.endswith("neuron"))
    for kind in ("forward", "backward"):
        src = model.cuda_source(kind, dtype, surrogate=surrogate, detach_reset=detach,
                                learnable=learnable, param_kinds=param_kinds)
        ptx = compile_ptx(src, "compute_80")
        assert ".entry ng_" in ptx
        if dtype != "float64":
            assert not re.search(r"\.f64\b", ptx), f"{kind} {dtype} uses double\n{model}"


@pytest.mark.parametrize("arch", ["compute_70", "compute_80", "compute_90"])
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_branches_and_clamps_compile(arch, dtype):
    from test_branches import MODELS, model
    for name in MODELS:
        for kind in ("forward", "backward"):
            ptx = compile_ptx(model(name).cuda_source(kind, dtype, learnable=("tau",)), arch)
            assert ".entry ng_" in ptx
            if dtype != "float64":
                assert not re.search(r"\.f64\b", ptx), f"{name} {kind} {dtype} uses double"
    # recorded states with and without their gradients, graded output, refractory
    m = model("refractory_graded")
    for kind, kw in (("forward", dict(record=("v", "w", "refractory"))),
                     ("backward", dict(record=("v", "w"), grad_record=("v", "w"),
                                       learnable=("amp", "tau")))):
        ptx = compile_ptx(m.cuda_source(kind, dtype, **kw), arch)
        assert ".entry ng_" in ptx
        if dtype != "float64":
            assert not re.search(r"\.f64\b", ptx), f"recorded {kind} {dtype} uses double"


@pytest.mark.skipif(__import__("shutil").which("ptxas") is None, reason="ptxas not installed")
def test_branches_and_clamps_do_not_spill(tmp_path):
    import subprocess
    import sys
    (tmp_path / "branchy.py").write_text(
        "import neurogen as ng\n"
        "from test_branches import MODELS\n"
        "models = {k: ng.NeuronModel(k, **v) for k, v in MODELS.items()}\n"
        + "".join(f"{k} = models[{k!r}]\n" for k in ("max_floor", "where_counter", "everything",
                                                      "clamp_params", "refractory_graded")))
    import os
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__),
                                                      os.environ.get("PYTHONPATH", "")]))
    refs = [f"{tmp_path / 'branchy.py'}:{k}" for k in ("max_floor", "where_counter",
                                                        "everything", "clamp_params",
                                                        "refractory_graded")]
    # (this ptxas, CUDA 13, has no sm_70; NVRTC compiles for compute_70 above)
    proc = subprocess.run([sys.executable, "-m", "neurogen", "check", *refs, "--arch", "sm_80",
                           "sm_90"], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith("ok ")]
    assert len(rows) == 5 * len(DTYPES) * 2 * 2
    for row in rows:
        assert "spill 0 B" in row, row
