"""neurogen neurons inside SpikingJelly 2.0 networks: functional helpers, containers, a conv SNN."""
import copy

import pytest
import torch
from torch import nn

import neurogen as ng
from neurogen.module import NeuronModule

from conftest import needs_cxx

functional = pytest.importorskip("spikingjelly.activation_based.functional")
sj_layer = pytest.importorskip("spikingjelly.activation_based.layer")
sj_neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
sj_surrogate = pytest.importorskip("spikingjelly.activation_based.surrogate")

pytestmark = needs_cxx


def test_reset_net_calls_our_reset():
    net = nn.Sequential(nn.Linear(3, 4), ng.neuron.LIFNode(backend="cpu"),
                        nn.Sequential(ng.neuron.AdExNode(backend="cpu")))
    net(torch.rand(2, 3) * 3)
    nodes = [net[1], net[2][0]]
    assert all(n.v is not None for n in nodes) and nodes[1].w is not None
    calls = []
    for n in nodes:
        original = n.reset
        n.reset = lambda original=original: (calls.append(1), original())
    functional.reset_net(net)
    assert len(calls) == 2
    assert all(n.v is None and n.v_seq is None for n in nodes) and nodes[1].w is None


def test_set_step_mode_and_detach_net():
    node = ng.neuron.LIFNode(backend="cpu")
    net = nn.Sequential(sj_layer.Linear(3, 4), node)
    functional.set_step_mode(net, "m")
    assert node.step_mode == "m" and net[0].step_mode == "m"
    assert node(torch.rand(5, 2, 4) * 3).shape == (5, 2, 4)
    with pytest.raises(ValueError, match="step_mode must be"):
        functional.set_step_mode(nn.Sequential(node), "x")   # our setter validates
    nn.init.constant_(net[0].weight, 1.0)
    functional.reset_net(net)
    net(torch.rand(3, 2, 3, requires_grad=True))
    assert node.v.grad_fn is not None
    functional.detach_net(net)               # truncated BPTT: SpikingJelly calls our detach()
    assert node.v.grad_fn is None


def test_sj_layers_around_our_neuron_in_multi_step_mode():
    torch.manual_seed(0)
    net = nn.Sequential(
        sj_layer.SeqToANNContainer(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2)),
        ng.neuron.IFNode(backend="cpu"), sj_layer.Flatten(), sj_layer.Linear(2 * 4 * 4, 3),
        ng.neuron.LIFNode(backend="cpu"))
    functional.set_step_mode(net, "m")
    out = net(torch.rand(4, 2, 1, 4, 4) * 4)
    assert out.shape == (4, 2, 3) and set(out.unique().tolist()) <= {0.0, 1.0}
    out.sum().backward()
    assert net[3].weight.grad is not None


def sj_conv_snn():
    surrogate = sj_surrogate.ATan(alpha=2.5)
    net = nn.Sequential(
        sj_layer.Conv2d(1, 4, 3, padding=1, bias=False),
        sj_layer.BatchNorm2d(4),
        sj_neuron.LIFNode(tau=2.5, v_threshold=0.7, v_reset=0.0, surrogate_function=surrogate),
        sj_layer.Flatten(),
        sj_layer.Linear(4 * 8 * 8, 10),
        sj_neuron.LIFNode(tau=3.0, v_threshold=0.5, v_reset=None, surrogate_function=surrogate,
                          detach_reset=True),
    )
    with torch.no_grad():
        net[4].weight.mul_(6.0)              # enough drive for the output layer to spike
    return net


def swap_neurons(net):
    """Our LIFNode in place of every SpikingJelly LIFNode, with the same settings."""
    for name, m in net.named_children():
        if isinstance(m, sj_neuron.LIFNode):
            sg = m.surrogate_function
            setattr(net, name, ng.neuron.LIFNode(
                tau=m.tau, decay_input=m.decay_input, v_threshold=m.v_threshold,
                v_reset=m.v_reset, detach_reset=m.detach_reset, backend="cpu",
                surrogate_function=getattr(ng.surrogate, type(sg).__name__)(alpha=sg.alpha)))
    return net


def test_conv_snn_with_our_neurons_matches_spikingjelly():
    torch.manual_seed(0)
    theirs = sj_conv_snn().double()
    ours = swap_neurons(copy.deepcopy(theirs))
    assert sum(isinstance(m, NeuronModule) for m in ours.modules()) == 2
    for net in (theirs, ours):
        functional.set_step_mode(net, "m")
    x = torch.rand(6, 2, 1, 8, 8, dtype=torch.float64) * 3
    loss_w = torch.randn(6, 2, 10, dtype=torch.float64)
    results = []
    for net in (theirs, ours):
        functional.reset_net(net)
        xi = x.clone().requires_grad_()
        out = net(xi)
        (out * loss_w).sum().backward()
        results.append((out.detach(), xi.grad, {n: p.grad for n, p in net.named_parameters()}))
    (out_sj, gx_sj, g_sj), (out_ng, gx_ng, g_ng) = results
    assert out_sj.shape == (6, 2, 10) and 0 < out_sj.sum() < out_sj.numel()  # some spikes, not all
    assert torch.equal(out_ng, out_sj)
    assert g_ng.keys() == g_sj.keys() and len(g_sj) == 5
    for name in g_sj:
        assert g_sj[name].abs().sum() > 0, name
        torch.testing.assert_close(g_ng[name], g_sj[name], rtol=1e-8, atol=1e-8,
                                   msg=lambda m: f"{name}: {m}")
    torch.testing.assert_close(gx_ng, gx_sj, rtol=1e-8, atol=1e-8)
    for a, b in zip(theirs.modules(), ours.modules()):  # batch-norm statistics too
        if isinstance(a, nn.BatchNorm2d):
            torch.testing.assert_close(b.running_mean, a.running_mean, rtol=0, atol=0)
