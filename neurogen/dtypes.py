"""The tensor dtypes kernels are made for, by name, and the arithmetic inside them:
double for float64, float for float32, float16 and bfloat16 (half types are loaded
and stored as such, computed in float)."""
import torch

NAMES = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16",
         torch.bfloat16: "bfloat16"}
ALL = tuple(NAMES.values())


def name(dtype) -> str:
    """``"float32"`` for ``torch.float32``...; None for a dtype no kernel is made for."""
    return NAMES.get(dtype)


def compute_type(dtype_name: str) -> str:
    """``"double"`` or ``"float"``: the C arithmetic type of a kernel over ``dtype_name``."""
    if dtype_name not in ALL:
        raise ValueError(f"dtype must be one of {list(ALL)}, not {dtype_name!r}")
    return "double" if dtype_name == "float64" else "float"


def compute_dtype(dtype_name: str):
    """The torch dtype of that arithmetic (parameters, parameter gradients)."""
    return torch.float64 if compute_type(dtype_name) == "double" else torch.float32


__all__ = ["NAMES", "ALL", "name", "compute_type", "compute_dtype"]
