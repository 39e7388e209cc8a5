"""``neurogen demo``: declare a new adaptive neuron, show its kernel, train a small SNN.

The task: scikit-learn's handwritten digits (8x8 images, 10 classes, shipped
inside the package, no download), each pixel intensity fed as a constant
input current for T steps to a hidden layer of the new neuron; the class
is read from output spike counts. Trains on the CPU (or a GPU if present).
"""
import os
import time

import torch
from torch import nn

import neurogen as ng

ALIF = ng.NeuronModel(
    name="alif",  # LIF with a spike-triggered adaptive threshold
    states={"v": 0.0, "th": "th0"},
    params={"tau": 2.0, "tau_th": 8.0, "th0": 1.0, "beta": 0.2},
    charge={"v": "v + (x - v) / tau"},
    adaptation={"th": "th + (th0 - th) / tau_th"},
    fire="v - th",
    reset={"v": "(1 - spike_d) * v", "th": "th + beta * spike"},
)


class SNN(nn.Module):
    def __init__(self, n_in, n_hidden, n_out, backend):
        super().__init__()
        self.fc1 = nn.Linear(n_in, n_hidden)
        # a learnable time constant per hidden neuron, trained inside the fused kernels
        tau = nn.Parameter(torch.full((n_hidden,), 2.0))
        self.hidden = ALIF.module(step_mode="m", backend=backend, store_v_seq=True, tau=tau,
                                  surrogate_function=ng.surrogate.ATan())
        self.fc2 = nn.Linear(n_hidden, n_out)
        self.out = ng.neuron.LIFNode(tau=2.0, step_mode="m", backend=backend)

    def forward(self, x_seq):
        self.hidden.reset()
        self.out.reset()
        h = self.hidden(self.fc1(x_seq))
        return self.out(self.fc2(h)), h


def _data(device, T):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    return xtr.to(device), xte.to(device), ytr.to(device), yte.to(device)


def _accuracy(model, x, y, T):
    with torch.no_grad():
        out, _ = model(x.unsqueeze(0).expand(T, *x.shape))
        return (out.sum(0).argmax(1) == y).float().mean().item()


def run_demo(quick=False, out="neurogen-demo-output", epochs=None):
    from tqdm import tqdm
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backend = "auto"
    T, hidden = (8, 64) if quick else (16, 128)
    epochs = epochs or (3 if quick else 12)
    print("A new neuron, declared in a few lines of sympy (neurogen.demo.ALIF):\n")
    print(ALIF)
    src = ALIF.cuda_source("forward", dtype="float32").splitlines()
    start = next(i for i, line in enumerate(src) if "for (int ng_t" in line)
    print("\nExcerpt of the generated CUDA forward kernel (time loop):")
    print("\n".join(src[start:start + 12]))
    print("   ...   (full source: ALIF.cuda_source('forward'); backward: 'backward')\n")
    xtr, xte, ytr, yte = _data(device, T)
    model = SNN(64, hidden, 10, backend).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    history = {"loss": [], "train_acc": [], "test_acc": []}
    t0 = time.time()
    for epoch in range(epochs):
        perm = torch.randperm(len(xtr), device=device)
        total, n = 0.0, 0
        for i in tqdm(range(0, len(xtr), 64), desc=f"epoch {epoch + 1}/{epochs}", leave=False):
            idx = perm[i:i + 64]
            x_seq = xtr[idx].unsqueeze(0).expand(T, -1, -1)
            spikes, _ = model(x_seq)
            loss = nn.functional.cross_entropy(spikes.mean(0) * 5.0, ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            n += len(idx)
        history["loss"].append(total / n)
        history["train_acc"].append(_accuracy(model, xtr, ytr, T))
        history["test_acc"].append(_accuracy(model, xte, yte, T))
        print(f"epoch {epoch + 1:2d}/{epochs}  loss {history['loss'][-1]:.3f}  "
              f"train acc {history['train_acc'][-1]:.3f}  test acc {history['test_acc'][-1]:.3f}")
    acc = history["test_acc"][-1]
    print(f"\nTest accuracy {acc:.3f} (chance 0.100) after {epochs} epochs in "
          f"{time.time() - t0:.1f} s on {device.type} with backend={backend}")
    paths = _plots(model, xte, T, history, out)
    print("Plots written to " + os.path.abspath(out) + ": " + ", ".join(os.path.basename(p) for p in paths))
    return 0 if acc > 0.5 else 1


def _plots(model, xte, T, history, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(out, exist_ok=True)
    with torch.no_grad():
        _, h = model(xte[:1].unsqueeze(0).expand(T, -1, -1))
        v_seq = model.hidden.v_seq[:, 0].cpu()
    h = h[:, 0].cpu()
    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    t_idx, n_idx = torch.nonzero(h, as_tuple=True)
    ax.scatter(t_idx, n_idx, s=4, marker="|")
    ax.set(xlabel="time step", ylabel="hidden neuron", title="Spike raster (one test digit)")
    paths.append(_save(fig, out, "spike_raster.png"))
    fig, ax = plt.subplots(figsize=(6, 4))
    for j in range(5):
        ax.plot(v_seq[:, j], label=f"neuron {j}")
    ax.set(xlabel="time step", ylabel="v (after reset)", title="Membrane traces")
    ax.legend(fontsize=7)
    paths.append(_save(fig, out, "membrane_traces.png"))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
    a1.plot(history["loss"])
    a1.set(xlabel="epoch", ylabel="loss", title="Training loss")
    a2.plot(history["train_acc"], label="train")
    a2.plot(history["test_acc"], label="test")
    a2.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    a2.legend()
    paths.append(_save(fig, out, "loss_accuracy.png"))
    return paths


def _save(fig, out, name):
    path = os.path.join(out, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return path
