"""The ``neurogen`` command, run as a user runs it (subprocesses), checked by its output."""
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from neurogen import neuron
from neurogen import surrogate as sg
from neurogen.cli import build_parser

USER_MODEL = '''
import neurogen as ng

mine = ng.NeuronModel("my_alif", states={"v": 0.0, "th": "th0"},
                      params={"tau": 2.0, "tau_th": 8.0, "th0": 1.0, "beta": 0.2},
                      charge={"v": "v + (x - v) / tau"},
                      adaptation={"th": "th + (th0 - th) / tau_th"},
                      fire="v - th", reset={"v": "(1 - spike_d) * v", "th": "th + beta * spike"})
not_a_model = 42
'''
BAD_MODEL = '''
import neurogen as ng

bad = ng.NeuronModel("bad", states={"v": 0.0}, params={"tau": 2.0},
                     charge={"v": "v + (x - v) / tua"}, fire="v - 1",
                     reset={"v": "(1 - spike_d) * v"})
'''
SUBCOMMANDS = {"list": "library neurons", "show": "--surrogate", "emit": "--target",
               "check": "--arch", "demo": "--quick"}
# A CuPy that cannot be imported, to see `check` fail politely without one.
NO_CUPY = 'raise ImportError("no CuPy in this test")\n'

COMMANDS = {
    "list": ["list"],
    "show_izh": ["show", "izhikevich"],
    "show_izh_learn": ["show", "izhikevich", "--learnable", "tau", "--surrogate", "ATan(alpha=3)"],
    "emit_half": ["emit", "izhikevich", "--kernel", "backward", "--dtype", "float16"],
    "emit_cpp": ["emit", "lif", "--target", "cpp"],
    "check_izh": ["check", "izhikevich", "--arch", "sm_80", "--dtype", "float32"],
    "user_show": ["show", "my_neuron.py:mine"],
    "user_emit": ["emit", "my_neuron.py:mine", "--target", "cpp", "--kernel", "backward",
                  "--learnable", "tau"],
    "user_check": ["check", "my_neuron.py:mine", "--arch", "sm_80", "--dtype", "float32"],
    "user_not_model": ["show", "my_neuron.py:not_a_model"],
    "user_no_file": ["show", "missing.py:mine"],
    "bad_show": ["show", "bad_neuron.py:bad"],
    "bad_emit": ["emit", "bad_neuron.py:bad"],
    "unknown": ["show", "nosuch"],
    "bad_learnable": ["emit", "lif", "--learnable", "tua"],
    "bad_surrogate": ["show", "lif", "--surrogate", "SpecError"],
    "bad_surrogate_args": ["show", "lif", "--surrogate", "Sigmoid(beta=2)"],
    "cpp_half": ["emit", "lif", "--target", "cpp", "--dtype", "float16"],
    "help": ["--help"],
    **{f"help_{sub}": [sub, "--help"] for sub in SUBCOMMANDS},
}


def neurogen(*args, cwd, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "neurogen", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every command above, run once; concurrently, since each spends ~3 s importing torch."""
    folder = tmp_path_factory.mktemp("cli")
    (folder / "my_neuron.py").write_text(USER_MODEL)
    (folder / "bad_neuron.py").write_text(BAD_MODEL)
    (folder / "fake" / "cupy").mkdir(parents=True)
    (folder / "fake" / "cupy" / "__init__.py").write_text(NO_CUPY)
    no_cupy_env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(folder / "fake")] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {key: pool.submit(neurogen, *args, cwd=folder) for key, args in COMMANDS.items()}
        futures["no_cupy"] = pool.submit(neurogen, "check", "lif", "--arch", "sm_80", "--dtype",
                                         "float32", cwd=folder, env=no_cupy_env)
        return {key: f.result() for key, f in futures.items()}


def ok(result):
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def failed(result, code):
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr


def has_cupy():
    try:
        import cupy  # noqa: F401
    except ImportError:
        return False
    return True


# ---- list / show / emit -------------------------------------------------------------------
def test_list_names_every_neuron_and_surrogate(runs):
    out = ok(runs["list"])
    for name, cls in neuron.LIBRARY.items():
        assert re.search(rf"^  {name} +states {', '.join(cls.spec.state_names)} ", out, re.M), name
    for cls in sg.LIBRARY:
        assert re.search(rf"^  {cls.__name__} +{re.escape(cls().key())}: g'\(u\) = ", out, re.M)
    assert "g'(u) = 4.0*(1 - sigmoid(4.0*u))*sigmoid(4.0*u)" in out


def test_show_izhikevich(runs):
    out = ok(runs["show_izh"])
    assert "NeuronModel 'izhikevich_node' (input x, fires on v)" in out
    assert "charge     v <- v + (a0*(v - v_c)*(v - v_rest) - w + x)/tau" in out
    assert "adaptation w <- w + (a*(v - v_rest) - w)/tau_w" in out
    for stage in ("ng_gsp = ", "ng_gu = ", "ng_gV_v = ", "ng_gB_v = ", "ng_gP_v = ", "ng_gP_w = ",
                  "ng_gx = ng_gB_v/tau"):
        assert f"  {stage}" in out, stage
    assert "surrogate Sigmoid(alpha=4.0)" in out
    assert re.search(r"^Saved per neuron-step for the backward: v after charge \(h\) "
                     r"\(4 bytes in float32\)$", out, re.M)
    assert "Recomputed in the backward: previous v" in out


def test_show_with_options(runs):
    out = ok(runs["show_izh_learn"])
    assert "surrogate ATan(alpha=3.0)" in out
    assert "  ng_gp_tau = " in out
    assert "x (re-read)" in out


def test_emit_half_precision_cuda_backward(runs):
    out = ok(runs["emit_half"])
    assert out.startswith("// neurogen: model izhikevich_node, template cuda_backward.cu.j2")
    assert "typedef __half io_t;" in out and "#include <cuda_fp16.h>" in out
    assert re.search(r'extern "C" __global__ void ng_izhikevich_node_backward_float16_\w+\(', out)
    assert "const compute_t sg_alpha" in out and "grad_x_seq" in out


def test_emit_cpp(runs):
    out = ok(runs["emit_cpp"])
    assert out.startswith("// neurogen: model lif_node, template cpp_forward.cpp.j2")
    assert "#include <math.h>" in out
    assert re.search(r'extern "C" void ng_lif_node_forward_float32_\w+\(', out)
    assert "__global__" not in out and "threadIdx" not in out


# ---- a user's model file -----------------------------------------------------------------
def test_user_model_show(runs):
    out = ok(runs["user_show"])
    assert "NeuronModel 'my_alif' (input x, fires on v)" in out
    assert "adaptation th <- th + (-th + th0)/tau_th" in out
    assert "  ng_gx = " in out and "Saved per neuron-step" in out


def test_user_model_emit(runs):
    out = ok(runs["user_emit"])
    assert out.startswith("// neurogen: model my_alif, template cpp_backward.cpp.j2")
    assert "grad_p_tau" in out


def test_user_model_check(runs):
    result = runs["user_check"]
    if not has_cupy():
        assert "needs CuPy" in failed(result, 1)
        return
    out = ok(result)
    assert re.search(r"^ok +my_alif +forward +float32 +sm_80", out, re.M)
    assert re.search(r"^ok +my_alif +backward +float32 +sm_80", out, re.M)


def test_user_file_errors(runs):
    assert "my_neuron.py:not_a_model is not a NeuronModel" in failed(runs["user_not_model"], 1)
    assert "no such file 'missing.py'" in failed(runs["user_no_file"], 1)


@pytest.mark.parametrize("key", ["bad_show", "bad_emit"])
def test_invalid_user_model_exits_2(runs, key):
    err = failed(runs[key], 2)
    assert err.startswith("neurogen: invalid model: charge equation of 'v' uses unknown symbol 'tua'")
    assert "Did you mean 'tau'?" in err


def test_unknown_model_is_explained(runs):
    err = failed(runs["unknown"], 1)
    assert "unknown model 'nosuch'" in err
    assert "izhikevich" in err and "IzhikevichNode" in err and "path/to/file.py:variable" in err


def test_bad_options_are_explained(runs):
    err = failed(runs["bad_learnable"], 1)
    assert "--learnable names unknown parameter(s) ['tua']" in err and "'tau'" in err
    err = failed(runs["bad_surrogate"], 2)
    assert "unknown surrogate 'SpecError'; choose from Sigmoid, ATan" in err
    err = failed(runs["bad_surrogate_args"], 2)
    assert "bad surrogate 'Sigmoid(beta=2)'" in err and "Sigmoid(alpha=4.0)" in err
    err = failed(runs["cpp_half"], 1)
    assert "C++ CPU kernels run float32 or float64, not float16" in err


# ---- check ------------------------------------------------------------------------------
def test_check_izhikevich(runs):
    result = runs["check_izh"]
    if not has_cupy():
        assert "needs CuPy" in failed(result, 1)
        return
    out = ok(result)
    lines = out.splitlines()
    assert len(lines) == 2
    for kind in ("forward", "backward"):
        assert re.search(rf"^ok +izhikevich_node +{kind} +float32 +sm_80 +nvrtc +[\d.]+ ms", out, re.M)
    if shutil.which("ptxas") is not None:
        assert all(re.search(r"registers \d+, stack \d+ B, spill \d+ B$", line) for line in lines)
    else:
        assert "ptxas not found" in out


def test_check_without_cupy_is_explained(runs):
    err = failed(runs["no_cupy"], 1)
    assert err.startswith("neurogen: the CUDA backend needs CuPy")


# ---- help --------------------------------------------------------------------------------
def test_help_for_every_subcommand(runs):
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    assert set(subparsers.choices) == set(SUBCOMMANDS)
    out = ok(runs["help"])
    assert out.startswith("usage: neurogen")
    for sub in SUBCOMMANDS:
        assert sub in out
    for sub, option in SUBCOMMANDS.items():
        out = ok(runs[f"help_{sub}"])
        assert out.startswith(f"usage: neurogen {sub}"), out
        assert option in out


# ---- a closed pipe (`neurogen emit ... | head`) --------------------------------------------
def test_closed_pipe_is_quiet(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "neurogen", "show", "izhikevich"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # the reader is gone before the first line is written
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


# ---- demo --------------------------------------------------------------------------------
def test_demo_quick(tmp_path):
    out_dir = tmp_path / "plots"
    t0 = time.perf_counter()
    result = neurogen("demo", "--quick", "--out", out_dir, cwd=tmp_path, timeout=300)
    elapsed = time.perf_counter() - t0
    out = ok(result)
    assert "NeuronModel 'alif'" in out and "for (int ng_t" in out
    accuracy = float(re.search(r"^Test accuracy (\d+\.\d+) ", out, re.M).group(1))
    assert accuracy > 0.5, out
    for name in ("spike_raster.png", "membrane_traces.png", "loss_accuracy.png"):
        assert (out_dir / name).stat().st_size > 1000, name
        assert (out_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert elapsed < 120, f"neurogen demo --quick took {elapsed:.0f} s"
