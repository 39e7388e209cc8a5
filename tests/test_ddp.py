"""Two-process DistributedDataParallel (gloo, CPU kernels) equals one process."""
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from conftest import needs_cxx

pytestmark = needs_cxx


def make_net():
    import neurogen as ng
    torch.manual_seed(0)
    tau = nn.Parameter(torch.full((16,), 2.5))          # per-neuron, learnable
    thr = nn.Parameter(torch.tensor(0.8))                 # scalar, learnable
    lif = ng.neuron.LIFNode.spec.module(step_mode="m", backend="cpu", tau=tau, v_threshold=thr)
    return nn.Sequential(nn.Linear(6, 16), lif, nn.Linear(16, 3)).double()


def data():
    g = torch.Generator().manual_seed(1)
    return torch.rand(10, 8, 6, generator=g, dtype=torch.float64) * 2, torch.randint(0, 3, (8,), generator=g)


def loss_of(net, x, y):
    seq = net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net
    seq[1].reset()
    return nn.functional.cross_entropy(net(x).mean(0), y)


def worker(rank, port, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    torch.set_num_threads(1)
    net = nn.parallel.DistributedDataParallel(make_net())
    x, y = data()
    half = slice(rank * 4, rank * 4 + 4)
    loss_of(net, x[:, half], y[half]).backward()
    if rank == 0:
        torch.save({n: p.grad for n, p in net.module.named_parameters()}, out)
    dist.barrier()
    dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_match_single_process(tmp_path):
    out = str(tmp_path / "grads.pt")
    mp.spawn(worker, args=(free_port(), out), nprocs=2, join=True)
    ddp = torch.load(out)
    net = make_net()
    x, y = data()
    # DDP averages the two half-batch gradients: the mean of two half-batch losses
    ((loss_of(net, x[:, :4], y[:4]) + loss_of(net, x[:, 4:], y[4:])) / 2).backward()
    for name, p in net.named_parameters():
        torch.testing.assert_close(ddp[name], p.grad, rtol=1e-10, atol=1e-12, msg=name)
    assert ddp["1.tau"].abs().sum() > 0 and ddp["1.v_threshold"].abs() > 0
