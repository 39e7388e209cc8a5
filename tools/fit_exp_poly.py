"""Coefficients of the float exponential inside the C++ kernels' ``ng_sigmoid_grad``.

exp(r) ~ 1 + r + r^2 (c2 + c3 r + c4 r^2 + c5 r^3) on |r| <= ln(2)/2, minimising the
largest relative error (Lawson's iteratively reweighted least squares, which converges to
the minimax fit of this linear problem). Prints the float32 coefficients, highest degree
first, as prelude.j2 uses them, and the error of the polynomial evaluated in float32 with
fused multiply-adds (each FMA rounded once, emulated in float64)."""
import numpy as np


def fit(iterations=400, points=20001):
    half = np.log(2) / 2
    r = np.cos(np.linspace(0, np.pi, points)) * half
    A = np.stack([r ** 2, r ** 3, r ** 4, r ** 5], 1) / np.exp(r)[:, None]
    b = (np.exp(r) - 1 - r) / np.exp(r)
    w = np.ones_like(r)
    for _ in range(iterations):
        c, *_ = np.linalg.lstsq(A * np.sqrt(w)[:, None], b * np.sqrt(w), rcond=None)
        err = np.abs(A @ c - b)
        w = w * err
        w /= w.sum()
    return c, err.max()


def float32_error(c):
    half = np.float32(np.log(2) / 2)
    r = np.linspace(-half, half, 400001, dtype=np.float32).astype(np.float64)
    c = [np.float64(np.float32(v)) for v in c]
    fma = lambda a, x, y: np.float32(a * x + y).astype(np.float64)  # noqa: E731
    q = np.full_like(r, c[3])
    for k in (2, 1, 0):
        q = fma(q, r, c[k])
    q = fma(q, r, 1.0)
    p = fma(q, r, 1.0)
    return np.abs(p / np.exp(r) - 1).max()


if __name__ == "__main__":
    c, err = fit()
    c32 = np.float32(c)
    print("c5..c2 =", ", ".join(f"{v}F" for v in [str(x) for x in c32[::-1]]))
    print(f"minimax relative error {err:.3g}; in float32 with FMAs {float32_error(c32):.3g} "
          f"({float32_error(c32) / 2 ** -24:.2f} half-ulps)")
