"""Modules survive state_dict, deepcopy, pickle and dtype conversion, and keep running."""
import copy
import os
import pickle
import subprocess
import sys

import pytest
import torch
from torch import nn

import neurogen as ng
from neurogen.cache import cache_dir

from conftest import needs_cxx

pytestmark = needs_cxx


def lif(dtype=torch.float32, **kw):
    """A LIF with a learnable per-neuron tau and a per-neuron threshold buffer."""
    return ng.neuron.LIFNode(tau=nn.Parameter(torch.full((4,), 2.5, dtype=dtype)),
                             v_threshold=torch.full((4,), 0.8, dtype=dtype), step_mode="m",
                             backend="cpu", store_v_seq=True, **kw)


def adex_node(model, dtype=torch.float32):
    return model.module(step_mode="m", backend="cpu", store_v_seq=True,
                        tau=nn.Parameter(torch.full((2, 4), 3.0, dtype=dtype)),
                        b=torch.linspace(0.0, 0.2, 4, dtype=dtype))


def x_seq(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(6, 2, 4, generator=g, dtype=torch.float64) * 1.5).to(dtype)


def train_a_step(node):
    """Change the learnable parameters so a state_dict carries non-default values."""
    node(x_seq(seed=1)).sum().backward()
    with torch.no_grad():
        for p in node.parameters():
            p -= 0.3 * p.grad
    node.reset()


@pytest.fixture(params=["lif", "adex"])
def make(request, adex):
    return {"lif": lif, "adex": lambda **kw: adex_node(adex, **kw)}[request.param]


def test_state_dict_round_trip_gives_same_outputs(make):
    node = make()
    train_a_step(node)
    sd = node.state_dict()
    assert {k for k in sd} == {n for n, _ in node.named_parameters()} | {
        n for n, _ in node.named_buffers()}
    fresh = make()
    fresh.load_state_dict(sd)
    for k, value in sd.items():
        assert torch.equal(getattr(fresh, k), value)
    assert isinstance(fresh.tau, nn.Parameter)
    assert torch.equal(fresh(x_seq()), node(x_seq()))
    assert torch.equal(fresh.v_seq, node.v_seq)


def test_deepcopy_after_forward_continues_identically(make):
    node = make()
    node(x_seq(seed=2))                      # states now hold an autograd graph (learnable tau)
    assert node.v.grad_fn is not None
    twin = copy.deepcopy(node)
    assert twin.model == node.model and twin.v is not node.v
    assert torch.equal(twin.v, node.v)
    out_twin, out_node = twin(x_seq()), node(x_seq())
    assert torch.equal(out_twin, out_node) and torch.equal(twin.v_seq, node.v_seq)
    out_twin.sum().backward()                # the copy trains on its own parameters
    assert node.tau.grad is None and twin.tau.grad is not None


def test_deepcopy_in_single_step_mode_keeps_v_list():
    node = lif()
    node.step_mode = "s"
    for t in range(3):
        node(x_seq()[t])
    twin = copy.deepcopy(node)
    twin(x_seq()[3]), node(x_seq()[3])
    assert twin.v_seq.shape[0] == 4 and torch.equal(twin.v_seq, node.v_seq)


def test_pickle_round_trip_runs(make):
    node = make()
    train_a_step(node)
    node(x_seq(seed=3))
    restored = pickle.loads(pickle.dumps(node))
    assert restored.model == node.model and restored.model.spec_hash == node.model.spec_hash
    assert torch.equal(restored(x_seq()), node(x_seq()))
    assert torch.equal(restored.v, node.v)
    torch.testing.assert_close(restored.tau, node.tau, rtol=0, atol=0)


UNPICKLE = """
import pickle, sys, torch
node = pickle.load(open(sys.argv[1], "rb"))
x = torch.load(sys.argv[2])
torch.save({"spikes": node(x), "v_seq": node.v_seq, "v": node.v}, sys.argv[3])
"""


def test_unpickled_in_a_new_process_loads_kernels_from_disk(tmp_path, adex, monkeypatch):
    # a cache folder of this test's own: other processes (another test run) building
    # kernels into the shared one meanwhile cannot look like a compile here
    monkeypatch.setenv("NEUROGEN_CACHE_DIR", str(tmp_path / "cache"))
    ng.forget_kernels()
    node = adex_node(adex)
    train_a_step(node)
    node(x_seq(seed=3))
    with open(tmp_path / "node.pkl", "wb") as f:
        pickle.dump(node, f)
    torch.save(x_seq(), tmp_path / "x.pt")
    want = node(x_seq())                     # compiles (or loads) the kernels in this process
    folder = cache_dir() / "cpu"
    # artefacts only: '.build-*' folders are other processes' builds in progress
    artefacts = lambda: sorted(f for f in os.listdir(folder) if not f.startswith(".build-"))  # noqa: E731
    before = artefacts()
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.run([sys.executable, "-c", UNPICKLE, str(tmp_path / "node.pkl"),
                           str(tmp_path / "x.pt"), str(tmp_path / "out.pt")],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    got = torch.load(tmp_path / "out.pt")
    assert torch.equal(got["spikes"], want)
    assert torch.equal(got["v_seq"], node.v_seq) and torch.equal(got["v"], node.v)
    assert artefacts() == before   # nothing compiled: the cache served it


def test_module_holds_nothing_unpicklable(make):
    node = make()
    node(x_seq())
    for k, value in vars(node).items():
        pickle.dumps(value)                  # ctypes functions etc. would fail here


@pytest.mark.parametrize("convert", ["to", "double"])
def test_to_float64_converts_parameters_buffers_and_states(make, convert):
    node = make()
    train_a_step(node)
    node(x_seq())                            # float32 states, then converted with the module
    want = make(dtype=torch.float64)
    want.load_state_dict({k: v.double() for k, v in node.state_dict().items()})
    want(x_seq(torch.float64))
    node = node.to(torch.float64) if convert == "to" else node.double()
    for name, t in list(node.named_parameters()) + list(node.named_buffers()):
        assert t.dtype == torch.float64, name
    assert isinstance(node.tau, nn.Parameter)
    assert node.v.dtype == torch.float64 and node.v_seq.dtype == torch.float64
    node.reset(), want.reset()
    out = node(x_seq(torch.float64))
    assert out.dtype == torch.float64 and node.v_seq.dtype == torch.float64
    assert torch.equal(out, want(x_seq(torch.float64)))
    torch.testing.assert_close(node.v_seq, want.v_seq, rtol=0, atol=0)
    out.sum().backward()
    assert node.tau.grad.dtype == torch.float64


def test_detach_cuts_the_graph_between_chunks():
    node = lif()
    node(x_seq())
    assert node.v.grad_fn is not None
    node.detach()
    assert node.v.grad_fn is None and node.v_seq.grad_fn is None
    node(x_seq()).sum().backward()           # backward through the second chunk only
    assert node.tau.grad is not None
