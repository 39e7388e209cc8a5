"""Portable model files: dict, JSON and TOML round trips keep the spec and its kernels exact."""
import json
import os
import subprocess
import sys

import pytest
import sympy as sp

import neurogen as ng
from neurogen import config, neuron
from neurogen.errors import SpecError
from neurogen.spec.parse import parse_expr
from neurogen.spec.serialize import expr_text

SOFT = (neuron.if_spec, neuron.lif_spec, neuron.plif_spec, neuron.qif_spec, neuron.eif_spec,
        neuron.cuba_lif_spec, neuron.izhikevich_spec, neuron.adex_spec)
SPECS = ({name: cls.spec for name, cls in neuron.LIBRARY.items()}
         | {f"{f.__name__}_soft": f(soft=True) for f in SOFT}
         | {"lif_no_decay": neuron.lif_spec(decay_input=False),
            "plif_soft_no_decay": neuron.plif_spec(soft=True, decay_input=False)})

ROUND_TRIPS = {
    "dict": lambda m: ng.NeuronModel.from_dict(m.to_dict()),
    "dict_via_json_text": lambda m: ng.NeuronModel.from_dict(json.loads(json.dumps(m.to_dict()))),
    "json": lambda m: ng.NeuronModel.from_json(m.to_json()),
    "toml": lambda m: ng.NeuronModel.from_toml(m.to_toml()),
}


def sources(model):
    """Every kernel text of ``model``, derived afresh (the derivation cache is keyed by spec)."""
    config.derivation.cache_clear()
    learn = tuple(model.param_names)
    out = {}
    for kind in ("forward", "backward"):
        out[f"cuda_{kind}"] = model.cuda_source(kind)
        out[f"cpp_{kind}"] = model.cpp_source(kind, dtype="float64")
    out["cuda_backward_learnable"] = model.cuda_source("backward", learnable=learn)
    out["cpp_backward_learnable"] = model.cpp_source("backward", learnable=learn, detach_reset=True)
    return out


def assert_same_model(loaded, model):
    assert loaded is not model
    assert loaded.canonical() == model.canonical()
    assert loaded.spec_hash == model.spec_hash
    assert (loaded.name, loaded.doc, loaded.input_name) == (model.name, model.doc, model.input_name)
    assert sources(loaded) == sources(model)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_library_round_trips_keep_kernels_byte_for_byte(name):
    model = SPECS[name]
    want = sources(model)
    for how, trip in ROUND_TRIPS.items():
        loaded = trip(model)
        assert loaded.spec_hash == model.spec_hash, how
        config.derivation.cache_clear()
        assert sources(loaded) == want, how


def test_adex_example_round_trips(adex, tmp_path):
    model = adex.replace(doc='AdEx "example"\nwith a backslash \\ and tab\t')
    for how, trip in ROUND_TRIPS.items():
        assert_same_model(trip(model), model)
    model.to_json(tmp_path / "adex.json")
    model.to_toml(str(tmp_path / "adex.toml"))
    assert_same_model(ng.NeuronModel.from_json(tmp_path / "adex.json"), model)
    assert_same_model(ng.NeuronModel.from_toml(str(tmp_path / "adex.toml")), model)


def test_files_are_plain_strings_and_floats(adex):
    d = adex.to_dict()
    assert d["states"] == {"v": "v_reset", "w": "0.0"}
    assert d["params"]["delta_T"] == 0.5 and isinstance(d["params"]["tau"], float)
    assert d["fire"] == "v - v_threshold"
    assert d["reset"]["w"] == "b*spike + w"
    assert list(d["states"]) == ["v", "w"] and list(d["params"])[0] == "tau"
    toml = adex.to_toml()
    assert 'fire = "v - v_threshold"' in toml and "\n[charge]\n" in toml
    assert "\ntau = 2.0\n" in toml


v, w, x, tau = sp.symbols("v w x tau")
TRICKY = [
    sp.Float(1 / 3) * v,                               # str() would keep 15 digits only
    sp.Float(1e-300) + v * sp.Float(-2.5e17),
    sp.Mul(-1, 1 / tau, x - v),                        # str() gives -(x - v)/tau, which distributes
    v ** 2, v ** -1, v ** sp.Rational(3, 2), sp.sqrt(v), v ** sp.Float(0.5), 2 ** v,
    sp.Rational(-7, 3) * v + sp.Rational(1, 2),
    sp.exp(-(v - w) / sp.Float(0.25)), ng.sigmoid(-v) * sp.tanh(w),
    sp.log(1 + v ** 2) + sp.sin(v) * sp.cos(w) - sp.atan(x),
    sp.E * v + sp.pi, sp.exp(1 + v),
    sp.Integer(-3) * (v + w) ** 2,
]


@pytest.mark.parametrize("expr", TRICKY, ids=str)
def test_expression_text_reads_back_identically(expr):
    text = expr_text(expr)
    assert sp.srepr(parse_expr(text)) == sp.srepr(expr), text


def test_expression_that_cannot_be_written_exactly_is_an_error():
    with pytest.raises(SpecError, match="reads back identically"):
        expr_text(sp.Float("0.1", 40) * v)


MALICIOUS = "__import__('os').system('touch PWNED')"


@pytest.mark.parametrize("fmt", ["json", "toml"])
def test_loading_never_runs_code(adex, tmp_path, monkeypatch, fmt):
    monkeypatch.chdir(tmp_path)
    text = getattr(adex, f"to_{fmt}")().replace("v - v_threshold", MALICIOUS)
    (tmp_path / f"evil.{fmt}").write_text(text)
    with pytest.raises(SpecError, match="not allowed"):
        getattr(ng.NeuronModel, f"from_{fmt}")(tmp_path / f"evil.{fmt}")
    d = adex.to_dict()
    d["charge"]["v"] = "v + x.__class__"
    with pytest.raises(SpecError, match="not allowed"):
        ng.NeuronModel.from_dict(d)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(charge={"v": ["v"]}), r"charge\.v must be equation text"),
    (lambda d: d.update(charge={"v": sp.Symbol("v") + sp.Symbol("x")}), "must be equation text"),
    (lambda d: d["params"].update(tau="2.0"), r"params\.tau must be a number"),
    (lambda d: d.update(states=["v"]), "'states' must be a table"),
    (lambda d: d.update(shell="rm -rf /"), r"unknown key\(s\) \['shell'\]"),
    (lambda d: d.update(version=99), "version 99 is not supported"),
    (lambda d: d.update(format="other"), "expected 'neurogen.model'"),
    (lambda d: d.pop("fire"), "'fire' must be a string"),
    (lambda d: d["charge"].update(v="v + (x - v) / tua"), "unknown symbol 'tua'"),
])
def test_bad_model_dicts_are_spec_errors(adex, change, message):
    d = adex.to_dict()
    change(d)
    with pytest.raises(SpecError, match=message):
        ng.NeuronModel.from_dict(d)


def test_bad_file_text_is_a_spec_error():
    with pytest.raises(SpecError, match="invalid JSON"):
        ng.NeuronModel.from_json("{not json")
    with pytest.raises(SpecError, match="invalid TOML"):
        ng.NeuronModel.from_toml("name = \n[[")
    with pytest.raises(SpecError, match="at the top"):
        ng.NeuronModel.from_json("[1, 2]")


def test_toml_without_a_reader_says_what_to_install(adex, monkeypatch):
    monkeypatch.setitem(sys.modules, "tomllib", None)   # as on Python < 3.11 without tomli
    monkeypatch.setitem(sys.modules, "tomli", None)
    text = adex.to_toml()                               # writing needs no library
    with pytest.raises(SpecError, match="pip install tomli"):
        ng.NeuronModel.from_toml(text)


def run_cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    return subprocess.run([sys.executable, "-m", "neurogen", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_reads_model_files(adex, tmp_path):
    adex.to_json(tmp_path / "model.json")
    adex.to_toml(tmp_path / "model.toml")
    shown = run_cli("show", "model.json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "adex" in shown.stdout and "delta_T" in shown.stdout
    emitted = run_cli("emit", "model.toml", "--target", "cpp", "--kernel", "backward", cwd=tmp_path)
    assert emitted.returncode == 0, emitted.stderr
    assert emitted.stdout.strip() == adex.cpp_source("backward").strip()
    (tmp_path / "evil.json").write_text(adex.to_json().replace("v - v_threshold", MALICIOUS))
    evil = run_cli("show", "evil.json", cwd=tmp_path)
    assert evil.returncode == 2 and "invalid model" in evil.stderr
    missing = run_cli("show", "missing.toml", cwd=tmp_path)
    assert missing.returncode != 0 and "no such file" in missing.stderr
    assert not (tmp_path / "PWNED").exists()
