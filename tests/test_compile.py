"""torch.compile(fullgraph=True) of networks with neurogen neurons: no graph breaks,
same forward and gradients as eager (kernels run as torch.library custom ops)."""
import pytest
import torch
from torch import nn

import neurogen as ng
from neurogen import autograd
from neurogen.plan import plan_for

from conftest import needs_cxx

pytestmark = [needs_cxx, pytest.mark.skipif(not autograd.AVAILABLE, reason="needs torch >= 2.4")]


class ConvSNN(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc1 = nn.Linear(4 * 64, 32)
        tau = nn.Parameter(torch.full((32,), 2.5))           # learnable, per neuron
        self.lif = ng.neuron.LIFNode.spec.module(step_mode="m", tau=tau)
        self.fc2 = nn.Linear(32, 5)
        self.izh = ng.neuron.IzhikevichNode(step_mode="m", a=0.2, b=0.1, v_threshold=0.3)

    def forward(self, x):                                     # x: [T, B, 1, 8, 8]
        T, B = x.shape[:2]
        h = self.conv(x.flatten(0, 1)).reshape(T, B, -1)
        return self.izh(self.fc2(self.lif(self.fc1(h)) * 3.0))


def run(net, x, chunks=1):
    for m in net.modules():
        if isinstance(m, ng.module.NeuronModule):
            m.reset()
    outs = [net(xc) for xc in x.chunk(chunks)]              # states carried across chunks
    y = torch.cat(outs)
    (y * torch.arange(1.0, 6.0, dtype=y.dtype)).sum().backward()
    return y.detach(), {n: p.grad.clone() for n, p in net.named_parameters()}


def test_fullgraph_compile_has_no_graph_breaks():
    net = ConvSNN()
    x = torch.rand(4, 2, 1, 8, 8) * 6
    explanation = torch._dynamo.explain(net)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons


@pytest.mark.parametrize("chunks", [1, 2])
def test_compiled_equals_eager_exactly_aot_eager_float64(chunks):
    x = torch.rand(6, 3, 1, 8, 8, dtype=torch.float64) * 6
    y0, g0 = run(ConvSNN().double(), x, chunks)
    y1, g1 = run(torch.compile(ConvSNN().double(), fullgraph=True, backend="aot_eager"), x, chunks)
    assert y0.sum() > 0, "the test network should spike"
    assert torch.equal(y0, y1)
    for name in g0:
        torch.testing.assert_close(g1[name.replace("_orig_mod.", "")] if name in g1 else
                                   g1["_orig_mod." + name], g0[name], rtol=1e-12, atol=1e-12)


def test_compiled_with_inductor_matches_eager():
    x = torch.rand(6, 3, 1, 8, 8) * 6
    y0, g0 = run(ConvSNN(), x)
    y1, g1 = run(torch.compile(ConvSNN(), fullgraph=True), x)
    assert torch.equal(y0, y1)
    for name, grad in g0.items():
        torch.testing.assert_close(g1["_orig_mod." + name], grad, rtol=1e-4, atol=1e-5)


def test_custom_op_passes_torch_library_checks():
    node = ng.neuron.LIFNode(step_mode="m", backend="cpu")
    scalars = [(f"p_{k}", v) for k, v in node.param_values().items()]
    plan = plan_for(node, ng.targets.get("cpu"), "float32", {}, (), True, (), scalars)
    key = plan.key
    x = torch.rand(3, 5) * 3
    args = (key, x, [torch.zeros(5)], [float(v) for _, v in plan.scalars])
    torch.library.opcheck(torch.ops.neurogen.multistep.default, args,
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.gpu
def test_cuda_graph_capture():
    node = ng.neuron.IzhikevichNode(step_mode="m", backend="cuda")
    x = torch.rand(16, 4096, device="cuda") * 2
    with torch.no_grad():
        node(x)                      # compile and warm up outside the capture
        node.reset()
        node.v = torch.zeros(4096, device="cuda")
        node.w = torch.zeros(4096, device="cuda")
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = node(x)
        graph.replay()
        torch.cuda.synchronize()
        node.reset()
        assert torch.equal(out, node(x))
