"""The ``neurogen`` command, run as a user runs it (subprocesses), checked by its output."""
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from neurogen import neuron
from neurogen import surrogate as sg
from neurogen.cli import build_parser, main

USER_MODEL = '''
import neurogen as ng

mine = ng.NeuronModel("my_alif", states={"v": 0.0, "th": "th0"},
                      params={"tau": 2.0, "tau_th": 8.0, "th0": 1.0, "beta": 0.2},
                      charge={"v": "v + (x - v) / tau"},
                      adaptation={"th": "th + (th0 - th) / tau_th"},
                      fire="v - th", reset={"v": "(1 - spike_d) * v", "th": "th + beta * spike"})
not_a_model = 42
# r: the last spike (reset only), th: a per-neuron threshold (no equation), c: unread
leaky = ng.NeuronModel("leaky_r", states={"v": 0.0, "r": 0.0, "th": 1.0, "c": 0.0},
                       params={"beta": 0.85},
                       charge={"v": "beta * (1 - r) * v + x"}, fire="v - th",
                       reset={"r": "spike_d", "c": "c + spike"})
'''
BAD_MODEL = '''
import neurogen as ng

bad = ng.NeuronModel("bad", states={"v": 0.0}, params={"tau": 2.0},
                     charge={"v": "v + (x - v) / tua"}, fire="v - 1",
                     reset={"v": "(1 - spike_d) * v"})
'''
# The subcommands and what each one's --help must mention.
SUBCOMMANDS = {"list": "usage: neurogen list [-h]", "show": "--surrogate", "emit": "--target",
               "check": "--arch", "demo": "--quick"}

COMMANDS = {
    "list": ["list"],
    "show_izh": ["show", "izhikevich"],
    "emit_half": ["emit", "izhikevich", "--kernel", "backward", "--dtype", "float16"],
    "emit_cpp": ["emit", "lif", "--target", "cpp"],
    "check_izh": ["check", "izhikevich", "--arch", "sm_80", "--dtype", "float32"],
    "user_show": ["show", "my_neuron.py:mine"],
    "leaky_show": ["show", "my_neuron.py:leaky"],
    "user_emit": ["emit", "my_neuron.py:mine", "--target", "cpp", "--kernel", "backward",
                  "--learnable", "tau"],
    "user_check": ["check", "my_neuron.py:mine", "--arch", "sm_80", "--dtype", "float32"],
    "bad_show": ["show", "bad_neuron.py:bad"],
    "unknown": ["show", "nosuch"],
    "help": ["--help"],
    **{f"help_{sub}": [sub, "--help"] for sub in SUBCOMMANDS},
}


def neurogen(*args, cwd, timeout=300):
    return subprocess.run([sys.executable, "-m", "neurogen", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every command above, run once; concurrently, since each spends ~3 s importing torch."""
    folder = user_files(tmp_path_factory.mktemp("cli"))
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {key: pool.submit(neurogen, *args, cwd=folder) for key, args in COMMANDS.items()}
        return {key: f.result() for key, f in futures.items()}


def user_files(folder):
    (folder / "my_neuron.py").write_text(USER_MODEL)
    (folder / "bad_neuron.py").write_text(BAD_MODEL)
    return folder


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


def check_output(result):
    """stdout of a `neurogen check` run, or None where CuPy is absent (then the run must
    have failed with exit code 1 and said that it needs CuPy)."""
    if not has_cupy():
        assert "needs CuPy" in failed(result, 1)
        return None
    return ok(result)


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
    assert re.search(r"^Saved per neuron-step for the backward: v after charge "
                     r"\(4 bytes in float32\)$", out, re.M)
    assert "Recomputed in the backward: previous v" in out
    assert ("  v (charge and reset): its value after charge saved by the forward at every "
            "step; its value before the step rebuilt from step t-1's reset (spike*v_reset + "
            "v*(1 - spike_d)) on step t-1's saved values (the initial value at t = 0)") in out
    assert "  w (adaptation and reset): not read" in out


def test_show_says_where_each_value_comes_from(runs):
    out = ok(runs["leaky_show"])
    assert "Saved per neuron-step for the backward: v after charge (4 bytes" in out
    assert ("  r (reset): its value before the step rebuilt from step t-1's reset (spike_d) "
            "on step t-1's saved values (the initial value at t = 0)") in out
    assert "  th (no equation: constant): the initial value at every step" in out
    assert "  c (reset): not read" in out
    assert "  fire value u[t] (spike, surrogate derivative): recomputed" in out


def test_emit_half_precision_cuda_backward(runs):
    out = ok(runs["emit_half"])
    assert out.startswith("// neurogen: model izhikevich_node, template cuda_kernel.cu.j2")
    assert "typedef __half io_t;" in out and "#include <cuda_fp16.h>" in out
    assert re.search(r'extern "C" __global__ void ng_izhikevich_node_backward_float16_\w+\(', out)
    assert "const compute_t sg_alpha" in out and "grad_x_seq" in out


def test_emit_cpp(runs):
    out = ok(runs["emit_cpp"])
    assert out.startswith("// neurogen: model lif_node, template cpp_kernel.cpp.j2")
    assert "#include <stdint.h>" in out and 'extern "C" float expf(float) noexcept;' in out
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
    assert out.startswith("// neurogen: model my_alif, template cpp_kernel.cpp.j2")
    assert "grad_p_tau" in out


def test_user_model_check(runs):
    out = check_output(runs["user_check"])
    if out is None:
        return
    assert re.search(r"^ok +my_alif +forward +float32 +sm_80", out, re.M)
    assert re.search(r"^ok +my_alif +backward +float32 +sm_80", out, re.M)


def test_invalid_user_model_exits_2(runs):
    err = failed(runs["bad_show"], 2)
    assert err.startswith("neurogen: invalid model: charge equation of 'v' uses unknown symbol "
                          "'tua'")
    assert "Did you mean 'tau'?" in err


def test_unknown_model_is_explained(runs):
    err = failed(runs["unknown"], 1)
    assert "unknown model 'nosuch'" in err
    assert "izhikevich" in err and "IzhikevichNode" in err and "path/to/file.py:variable" in err


# ---- check ------------------------------------------------------------------------------
def test_check_izhikevich(runs):
    out = check_output(runs["check_izh"])
    if out is None:
        return
    lines = out.splitlines()
    assert len(lines) == 2
    for kind in ("forward", "backward"):
        assert re.search(rf"^ok +izhikevich_node +{kind} +float32 +sm_80 +nvrtc +[\d.]+ ms", out,
                         re.M)
    if shutil.which("ptxas") is not None:
        assert all(re.search(r"registers \d+, stack \d+ B, spill \d+ B$", line) for line in lines)
    else:
        assert "ptxas not found" in out


# ---- help --------------------------------------------------------------------------------
def test_help_for_every_subcommand(runs):
    parser_subcommands = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert set(SUBCOMMANDS) <= set(parser_subcommands)
    out = ok(runs["help"])
    assert out.startswith("usage: neurogen")
    for sub, mention in SUBCOMMANDS.items():
        assert sub in out
        sub_out = ok(runs[f"help_{sub}"])
        assert sub_out.startswith(f"usage: neurogen {sub}"), sub_out
        assert "-h, --help" in sub_out and mention in sub_out


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


# ---- the same entry point in-process: options and mistakes (fast, no torch import each) ---
def cli(argv, capsys):
    """(exit code, stdout, stderr) of ``neurogen <argv>`` run in this process."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
        if isinstance(code, str):  # SystemExit("neurogen: ...") prints the text, exits 1
            print(code, file=sys.stderr)
            code = 1
    out, err = capsys.readouterr()
    return code, out, err


def test_show_with_options(capsys):
    code, out, _ = cli(["show", "izhikevich", "--learnable", "tau", "--surrogate", "ATan(alpha=3)",
                        "--dtype", "float64"], capsys)
    assert code == 0
    assert "surrogate ATan(alpha=3.0)" in out and "  ng_gp_tau = " in out
    # dH/dtau reads w: saved as it was before the step (nothing to rebuild for it)
    assert "w before the step, v after charge (16 bytes in float64)" in out
    assert "Recomputed in the backward: previous v, x (re-read)" in out


@pytest.mark.parametrize("argv, code, message", [
    (["show", "my_neuron.py:not_a_model"], 1, "my_neuron.py:not_a_model is not a NeuronModel"),
    (["show", "missing.py:mine"], 1, "no such file 'missing.py'"),
    (["emit", "bad_neuron.py:bad"], 2, "neurogen: invalid model: charge equation of 'v' uses "
                                       "unknown symbol 'tua'"),
    (["check", "bad_neuron.py:bad"], 2, "Did you mean 'tau'?"),
    (["show", "lif", "--learnable", "tua"], 1, "--learnable names unknown parameter(s) ['tua']; "
                                               "lif_node's parameters are ['tau',"),
    (["emit", "lif", "--learnable", "tua"], 1, "--learnable names unknown parameter(s) ['tua']"),
    (["show", "lif", "--surrogate", "SpecError"], 2, "unknown surrogate 'SpecError'; choose from "
                                                     "Sigmoid, ATan"),
    (["show", "lif", "--surrogate", "Sigmoid(beta=2)"], 2,
     "bad surrogate 'Sigmoid(beta=2)' (Sigmoid takes ['alpha'], not ['beta'])"),
    (["show", "lif", "--surrogate", "ATan(alpha)"], 2, "write e.g. 'ATan(alpha=2.0)'"),
    (["emit", "lif", "--target", "cpp", "--dtype", "float16"], 1,
     "the C++ CPU kernels support float32, float64, bfloat16, not float16"),
    (["emit", "lif", "--target", "tpu"], 1, "--target must be one of ['cpu', 'cuda', "
                                            "'cuda-emulated']"),
])
def test_mistakes_are_explained(argv, code, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(user_files(tmp_path))
    got, out, err = cli(argv, capsys)
    assert got == code, (out, err)
    assert message in err
    assert "Traceback" not in err


def test_check_without_cupy_is_explained(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` raises ImportError
    code, _, err = cli(["check", "lif", "--arch", "sm_80", "--dtype", "float32"], capsys)
    assert code == 1
    assert err.startswith("neurogen: the CUDA backend needs CuPy")
