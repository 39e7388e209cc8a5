"""Random valid neuron models (tests/strategies.py): the generated C++ kernels against
the torch-autograd reference in float64, forward and backward (issue 6)."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


from conftest import assert_match, needs_cxx, run_and_grad
from strategies import models

pytestmark = needs_cxx
T, N = 5, 23


def check_cpu_against_reference(case, seed):
    model, surrogate, detach, learnable = case
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(T, N, generator=gen, dtype=torch.float64) * 0.8 + 0.8
    init = {s: torch.rand(N, generator=gen, dtype=torch.float64) * 0.5
            for s in model.state_names}
    kw = dict(params=dict(model.defaults), init=init, learnable=learnable,
              surrogate_function=surrogate, detach_reset=detach, seed=seed)
    ref = run_and_grad(model, "torch", x, **kw)
    got = run_and_grad(model, "cpu", x, **kw)
    assert_match(got, ref, fwd_tol=1e-10, grad_tol=1e-8)


CASES = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@settings(max_examples=100, **CASES)  # beside test_structure_fuzz's structures
@given(models(), st.integers(0, 2**16))
def test_random_models_cpu_equal_reference(case, seed):
    check_cpu_against_reference(case, seed)


@pytest.mark.slow
@settings(max_examples=2000, **CASES)
@given(models(), st.integers(0, 2**16))
def test_random_models_cpu_equal_reference_many(case, seed):
    check_cpu_against_reference(case, seed)
