"""The inlined float sigmoid and sigmoid' of the C++ kernels against float64, ulp by ulp."""
import ctypes
import functools

import numpy as np
import pytest

from neurogen.targets import host_compiler
from neurogen.targets.c_source import env as _env


def _build(kernel, name, compute):
    """``kernel`` after the C++ prelude, built as the library builds its kernels of that
    compute type (float: with FMA contraction)."""
    prelude = _env.get_template("prelude.j2").render(
        target="cpp", model="test", template="prelude.j2", spec_hash="-", config_hash="-",
        io_t=compute, compute_t=compute, load_io="value", store_io="value")
    flags = host_compiler.CPU_FMA_FLAGS if compute == "float" else host_compiler.CPU_FLAGS
    return host_compiler.compile_cpp(prelude + kernel, name, flags)


@functools.lru_cache(maxsize=None)
def _prelude_fn(function):
    fn = _build(f"""
extern "C" void ng_test_{function}(const float* z, float* out, const long n) {{
#pragma omp simd
    for (long i = 0; i < n; ++i) out[i] = {function}(z[i]);
}}
""", f"ng_test_{function}", "float")
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long]
    return fn


def _sigmoid32(z, function="ng_sigmoid"):
    fn = _prelude_fn(function)
    z = np.ascontiguousarray(z, dtype=np.float32)
    out = np.empty_like(z)
    fn(z.ctypes.data, out.ctypes.data, z.size)
    return out


def _ulps(a, b):
    """Distance in units in the last place between float32 arrays (same sign assumed)."""
    ia, ib = a.view(np.int32).astype(np.int64), b.view(np.int32).astype(np.int64)
    return np.abs(ia - ib)


def test_sigmoid_within_2_ulp():
    rng = np.random.default_rng(0)
    z = np.concatenate([np.linspace(-88, 90, 2_000_001, dtype=np.float32),
                        rng.uniform(-88, 90, 1_000_000).astype(np.float32),
                        rng.normal(0, 1, 1_000_000).astype(np.float32),
                        np.float32([0.0, -0.0, 1e-30, -1e-30, 87.0, -87.0, 88.0, -88.0, 88.7, 89.0])])
    got = _sigmoid32(z)
    exact = (1.0 / (1.0 + np.exp(-z.astype(np.float64)))).astype(np.float32)
    worst = int(_ulps(got, exact).max())
    assert worst <= 2, f"ng_sigmoid is {worst} ulp off at z = {z[_ulps(got, exact).argmax()]}"


def test_sigmoid_tails_and_specials():
    z = np.float32([-88.5, -100.0, -1e30, -np.inf, 100.0, 1e30, np.inf, np.nan])
    got = _sigmoid32(z)
    with np.errstate(over="ignore"):
        exact = 1.0 / (1.0 + np.exp(-z[:-1].astype(np.float64)))
    assert np.all(np.abs(got[:-1] - exact) < 1e-38)
    assert np.all(got[4:7] == 1.0)
    assert np.isnan(got[-1])


@pytest.mark.parametrize("z", [0.5, -3.0, 20.0])
def test_sigmoid_matches_libm_closely(z):
    # the emitted float kernels used glibc's expf before; results stay within 2 ulp of it
    got = _sigmoid32(np.float32([z]))[0]
    libm = np.float32(1.0) / (np.float32(1.0) + np.exp(np.float32(-z)))
    assert _ulps(np.float32([got]), np.float32([libm]))[0] <= 2


def _sigmoid_grad32(z):
    return _sigmoid32(z, "ng_sigmoid_grad")


def _sigmoid_grad64(z):
    e = np.exp(-np.abs(z.astype(np.float64)))
    return e / (1 + e) ** 2


def test_sigmoid_grad_within_5_ulp():
    # 4 million points on [-87, 87]: 89% within 1 ulp, 10 points at 5 ulp (3.4e-7 relative)
    rng = np.random.default_rng(1)
    z = np.concatenate([np.linspace(-87, 87, 2_000_001, dtype=np.float32),
                        rng.uniform(-87, 87, 1_000_000).astype(np.float32),
                        rng.normal(0, 2, 1_000_000).astype(np.float32),
                        np.float32([0.0, -0.0, 1e-30, -1e-30, 1e-3, 0.34657359, 0.3465736,
                                    10.0, -10.0, 30.0, 87.0, -87.0])])
    got = _sigmoid_grad32(z)
    exact = _sigmoid_grad64(z).astype(np.float32)
    ulps = _ulps(got, exact)
    assert ulps.max() <= 5, f"ng_sigmoid_grad is {ulps.max()} ulp off at z = {z[ulps.argmax()]}"
    assert np.array_equal(got, _sigmoid_grad32(-z))  # even function, bit for bit


def test_sigmoid_grad_tails_and_specials():
    z = np.float32([87.5, -88.0, 88.5, -100.0, 1e30, -1e30, np.inf, -np.inf, np.nan])
    got = _sigmoid_grad32(z)
    with np.errstate(over="ignore"):
        exact = _sigmoid_grad64(z[:-1])
    assert np.all(np.abs(got[:-1] - exact) < 2e-38)
    assert np.all(got[2:-1] == 0.0)
    assert np.isnan(got[-1])


def test_sigmoid_grad_beats_s_times_one_minus_s():
    # the form the kernels used before, s (1 - s) with s from ng_sigmoid, loses relative
    # accuracy as 1 - s cancels; e / (1 + e)^2 does not
    z = np.float32([5.0, 10.0, 15.0])
    s = _sigmoid32(z)
    old = s * (np.float32(1) - s)
    exact = _sigmoid_grad64(z)
    new_err = np.abs(_sigmoid_grad32(z) / exact - 1)
    old_err = np.abs(old / exact - 1)
    assert np.all(new_err < 3e-7) and old_err.max() > 1e-4


@functools.lru_cache(maxsize=None)
def _prelude_binary(function, compute):
    fn = _build(f"""
extern "C" void ng_test_{function}_{compute}(const {compute}* a, const {compute}* b,
                                              {compute}* out, const long n) {{
#pragma omp simd
    for (long i = 0; i < n; ++i) out[i] = {function}(a[i], b[i]);
}}
""", f"ng_test_{function}_{compute}", compute)
    fn.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_long]
    return fn


@pytest.mark.parametrize("compute", ["float", "double"])
@pytest.mark.parametrize("function,reference", [("ng_fmax", np.fmax), ("ng_fmin", np.fmin)])
def test_fmax_fmin_follow_c_semantics(compute, function, reference):
    # C's fmax/fmin (and numpy's): a NaN argument gives the other one; both NaN give NaN
    dtype = np.float32 if compute == "float" else np.float64
    nan, inf = np.nan, np.inf
    a = np.array([1, 2, -3, nan, 5, nan, -inf, inf, 0.0, -0.5] * 2, dtype=dtype)
    b = np.array([2, 1, -3, 4, nan, nan, 7, 7, 1e-30, -0.25] * 2, dtype=dtype)
    out = np.empty_like(a)
    _prelude_binary(function, compute)(a.ctypes.data, b.ctypes.data, out.ctypes.data, a.size)
    np.testing.assert_array_equal(out, reference(a, b))
