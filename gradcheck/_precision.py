# SPDX-License-Identifier: MIT
"""Floating-point formats a derivation may compute in.

NumPy knows float16, float32 and float64 (dtype kind ``"f"``); the formats
of machine learning, such as bfloat16, come from ml_dtypes, which JAX
uses too, and have dtype kind ``"V"``. Both are floats here: a derivation
may return them, parameters given in them are upcast to float64 for the
references, and the band follows their epsilon.
"""

from __future__ import annotations

import functools

import ml_dtypes
import numpy as np

__all__ = ["float_eps", "float_tiny", "is_float_dtype", "dtype_name"]


@functools.cache
def _ml_finfo(dtype: np.dtype) -> object | None:
    try:
        return ml_dtypes.finfo(dtype)
    except (TypeError, ValueError):
        return None


def is_float_dtype(dtype: object) -> bool:
    """Whether ``dtype`` is a real floating-point format (numpy or ml_dtypes)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return True
    return dtype.kind == "V" and _ml_finfo(dtype) is not None


def float_eps(dtype: object) -> float:
    """Return the machine epsilon of a floating-point ``dtype``, as a float."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return float(np.finfo(dtype).eps)
    info = _ml_finfo(dtype)
    if info is None:
        raise TypeError(f"{dtype} is not a floating-point dtype")
    return float(info.eps)  # type: ignore[attr-defined]


def float_tiny(dtype: object) -> float:
    """Return the smallest normal number of a floating-point ``dtype``.

    Below it a value keeps no relative accuracy: a computation in that
    format may round it to a subnormal or to zero, off by up to this much.
    """
    dtype = np.dtype(dtype)
    info = np.finfo(dtype) if dtype.kind == "f" else _ml_finfo(dtype)
    if info is None:
        raise TypeError(f"{dtype} is not a floating-point dtype")
    return float(info.smallest_normal)  # type: ignore[attr-defined]


def dtype_name(dtype: object) -> str:
    """Return the dtype's name, ``bfloat16`` included."""
    return np.dtype(dtype).name
