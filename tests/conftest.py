# SPDX-License-Identifier: MIT
"""Shared test configuration: JAX in float64 with strict promotion, and
Hypothesis profiles.

``GRADCHECK_PROFILE=ci`` (what ``nox -s tests`` sets) selects a derandomised
profile with no example database and no deadline, so CI runs are
repeatable; the default ``dev`` profile draws fresh examples each run.
"""

from __future__ import annotations

import os

import jax
from hypothesis import HealthCheck, settings

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")

_SLOW_CHECKS = [HealthCheck.too_slow, HealthCheck.data_too_large]

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=25,
    print_blob=True,
    suppress_health_check=_SLOW_CHECKS,
)
settings.register_profile(
    "dev",
    deadline=None,
    max_examples=15,
    suppress_health_check=_SLOW_CHECKS,
)
settings.load_profile(os.environ.get("GRADCHECK_PROFILE", "dev"))
