"""The inlined float sigmoid of the C++ kernels against float64 sigmoid, ulp by ulp."""
import ctypes

import numpy as np
import pytest

from neurogen import runtime
from neurogen.codegen import _env


def _prelude_sigmoid():
    prelude = _env.get_template("prelude.j2").render(
        target="cpp", model="test", template="prelude.j2", spec_hash="-", config_hash="-",
        io_t="float", compute_t="float", load_io="value", store_io="value")
    source = prelude + """
extern "C" void ng_test_sigmoid(const float* z, float* out, const long n) {
#pragma omp simd
    for (long i = 0; i < n; ++i) out[i] = ng_sigmoid(z[i]);
}
"""
    fn = runtime.compile_cpp(source, "ng_test_sigmoid")
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long]
    return fn


def _sigmoid32(z):
    fn = _prelude_sigmoid()
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
