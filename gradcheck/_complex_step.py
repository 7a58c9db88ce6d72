# SPDX-License-Identifier: MIT
"""The complex step: a numeric derivative accurate to rounding, when it applies.

For a loss that is complex-analytic in a parameter ``z_k``,
``Im L(z + i h e_k) / h`` equals ``dL/dz_k`` up to ``h^2 L''' / 6``: there
is no difference of nearby values, so no cancellation, and the only error
is the rounding of one evaluation. The step is
``COMPLEX_STEP * max(1, |z_k|)`` with ``COMPLEX_STEP = 1e-30``: the
truncation term is then about ``1e-60`` relative, far below rounding for
any loss whose third derivative is not ``1e44`` times its first, and
the imaginary parts carried through the forward pass (about ``h`` times a
derivative) stay far above the smallest normal float64 (``2e-308``) for
any derivative above ``1e-270``. Smaller steps buy nothing; larger ones
only let the truncation term back in.

Not every jax.numpy function is complex-analytic: ``abs``, ``real``,
``conj``, ``where`` and comparisons on complex values silently give a
wrong imaginary part. So the complex step is never trusted alone. Per
entry, it is accepted only where it lies within the central difference's
own acceptance band (see :mod:`gradcheck._compare`) and, where autodiff
exists, within the rounding band of autodiff; there it replaces the
central difference and its error estimate drops to a few ulps, so the
band shrinks to rounding and smaller mistakes are detected. Anywhere else
the central difference stays, and the result records how many entries
rejected the complex step and why.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gradcheck._compare import SAFETY_FACTOR, Reference
from gradcheck._delta_numpy import flat_params, n_probe_columns, row_losses
from gradcheck._networks import Network
from gradcheck._numeric import EPS, ROUNDING_FACTOR, ULP_FACTOR, NumericEstimate
from gradcheck.errors import InvalidTypeError

__all__ = [
    "COMPLEX_STEP",
    "ComplexStep",
    "check_complex_step_option",
    "complex_loss_error",
    "complex_step_gradient",
    "delta_rule_complex_step",
    "merge_complex_step",
]

Array = NDArray[np.float64]

COMPLEX_STEP = 1e-30

# Rows of complex points per vectorised evaluation, which bounds memory.
CHUNK = 256

# Why an entry rejected the complex step, by code (0 is accepted).
REASONS = {
    1: "outside the central difference's band",
    2: "off autodiff by more than rounding",
    3: "not finite",
}

# Rejected entries named in a record; the counts cover the rest.
MAX_NAMED = 5


@dataclass(frozen=True)
class ComplexStep:
    """What became of the complex-step reference in one check.

    Attributes:
        status: ``used`` (computed and compared entry by entry), ``off``
            (switched off by the caller) or ``unavailable`` (the loss does
            not accept complex input, or cannot be traced).
        reason: why it is off or unavailable, or empty.
        n_entries: entries it was computed for.
        n_accepted: entries where it replaced the central difference.
        rejected: per reason, the number of entries that kept the central
            difference.
        examples: the first few rejected entries, with their reason.
    """

    status: str
    reason: str = ""
    n_entries: int = 0
    n_accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    examples: tuple[str, ...] = ()

    @property
    def numeric_reference(self) -> str:
        """Name the numeric reference used, in words."""
        if self.status != "used" or self.n_accepted == 0:
            return "central differences"
        if self.n_accepted == self.n_entries:
            return "complex step"
        return (
            f"complex step at {self.n_accepted} of {self.n_entries} entries, "
            "central differences elsewhere"
        )

    def summary(self) -> str:
        """Describe the record in one line."""
        if self.status != "used":
            return f"complex step {self.status}: {self.reason}"
        text = f"complex step accepted at {self.n_accepted} of {self.n_entries} entries"
        if self.rejected:
            why = "; ".join(f"{n} {r}" for r, n in self.rejected.items())
            text += f", rejected at {why}"
        return text

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-ready copy."""
        return {
            "status": self.status,
            "reason": self.reason,
            "n_entries": self.n_entries,
            "n_accepted": self.n_accepted,
            "rejected": dict(self.rejected),
            "examples": list(self.examples),
            "numeric_reference": self.numeric_reference,
        }


def check_complex_step_option(value: object) -> bool | None:
    """Validate ``complex_step=``: ``True``, ``False`` or ``None`` (automatic)."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return None if value is None else bool(value)
    raise InvalidTypeError(
        f"complex_step must be True, False or None, got complex_step={value!r}",
        name="complex_step",
        value=value,
    )


def merge_complex_step(
    central: NumericEstimate,
    value: Array,
    autodiff: Array | None,
    rounding: Array | float = 0.0,
) -> tuple[NumericEstimate, NDArray[np.int64]]:
    """Replace central differences by the complex step where both agree.

    Call it once per named quantity: the band's floor scales with the
    quantity's largest autodiff entry, as in :func:`compare_quantity`.

    Args:
        central: the central-difference estimate of one quantity.
        value: the complex-step derivative, shaped like it.
        autodiff: the autodiff value, or ``None``.
        rounding: the rounding allowance per entry, as in the band.

    Returns:
        The merged estimate, and per entry the reason code of
        :data:`REASONS` (0 where the complex step was accepted).
    """
    value = np.asarray(value, dtype=np.float64)
    finite = np.isfinite(value)
    safe = np.where(finite, value, 0.0)
    # The floor of the band exactly as the comparison will compute it, so
    # that an accepted entry never leaves the references disagreeing.
    scale = float(np.max(np.abs(safe if autodiff is None else autodiff), initial=0.0))
    floor = np.asarray(rounding) + ROUNDING_FACTOR * EPS * scale
    # Within the band the central difference would be judged by.
    inside = np.abs(safe - central.value) <= SAFETY_FACTOR * (central.error + floor)
    # One evaluation, rounded a few times: a few ulps of the value.
    error = ULP_FACTOR * EPS * np.abs(safe)
    agrees = np.ones_like(inside)
    if autodiff is not None:
        agrees = np.abs(safe - autodiff) <= SAFETY_FACTOR * (error + floor)
    reason = np.where(~finite, 3, np.where(~inside, 1, np.where(~agrees, 2, 0)))
    accepted = reason == 0
    merged = NumericEstimate(
        np.where(accepted, safe, central.value),
        np.where(accepted, error, central.error),
        central.step,
    )
    return merged, reason.astype(np.int64)


def _rejections(
    codes: Mapping[str, NDArray[np.int64]],
) -> tuple[int, int, dict[str, int], tuple[str, ...]]:
    """Count entries and rejections over quantities, naming the first few."""
    n_entries = n_accepted = 0
    rejected: dict[str, int] = {}
    examples: list[str] = []
    for name, code in codes.items():
        n_entries += code.size
        n_accepted += int((code == 0).sum())
        for k, text in REASONS.items():
            if (code == k).any():
                rejected[text] = rejected.get(text, 0) + int((code == k).sum())
        for idx in np.argwhere(code)[: max(0, MAX_NAMED - len(examples))]:
            where = ",".join(str(int(i)) for i in idx)
            label = f"{name}[{where}]" if idx.size else name  # a 0-d leaf
            examples.append(f"{label}: {REASONS[int(code[tuple(idx)])]}")
    return n_entries, n_accepted, rejected, tuple(examples)


def record(codes: Mapping[str, NDArray[np.int64]]) -> ComplexStep:
    """Return the record of a complex step used on these quantities."""
    n_entries, n_accepted, rejected, examples = _rejections(codes)
    return ComplexStep("used", "", n_entries, n_accepted, rejected, examples)


# The general gradient: a jax.numpy loss of one flat vector.


def complex_loss_error(layout: Callable[..., Any], z: Array, data: object) -> str:
    """Return why the loss cannot take a complex step, or an empty string.

    The loss must trace with complex parameters and return a complex
    value: one that returns a real value (through ``abs`` or ``real``)
    has dropped the imaginary part the step needs.
    """
    import jax
    import jax.numpy as jnp

    with jax.enable_x64(True), jax.numpy_dtype_promotion("standard"):
        try:
            out = jax.eval_shape(
                lambda zc: layout(zc, data),
                jax.ShapeDtypeStruct(z.shape, jnp.complex128),
            )
        except Exception as err:  # any failure to trace: no complex step
            first_line = str(err).strip().split("\n")[0][:160]
            return (
                "the loss does not accept complex parameters: "
                f"{type(err).__name__}: {first_line}"
            )
    dtype = getattr(out, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.complexfloating):
        return (
            f"the loss returns {dtype} for complex parameters (abs, real or a "
            "cast inside it drops the imaginary part)"
        )
    return ""


@functools.lru_cache(maxsize=64)
def _complex_shifted(layout: Callable[..., Any]) -> Callable[..., Any]:
    """Return the jitted ``Im L(z + i h e_k) / h`` over rows ``(k, h)``."""
    import jax
    import jax.numpy as jnp

    @jax.jit
    def shifted(z, index, step, data):
        def one(i, h):
            zc = z.astype(jnp.complex128).at[i].add(1j * h)
            return jnp.imag(layout(zc, data)) / h

        return jax.vmap(one)(index, step)

    return shifted


def complex_step_gradient(
    layout: Callable[..., Any], z: Array, data: object, chunk: int = 512
) -> Array:
    """Return the complex-step derivative along every coordinate of ``z``.

    Vectorised with ``jax.vmap`` in chunks of a fixed length (the last one
    padded), so the function compiles once per layout and shape.

    Args:
        layout: ``layout(z, data) -> loss``, hashable (it keys the cache).
        z: the point, shape ``(P,)``.
        data: the loss's further arguments.
        chunk: rows per call.

    Returns:
        ``dL/dz``, shape ``(P,)``.
    """
    import jax
    import jax.numpy as jnp

    steps = COMPLEX_STEP * np.maximum(1.0, np.abs(z))
    n = z.size
    chunk = max(1, min(chunk, n))
    size = -(-n // chunk) * chunk
    index = np.zeros(size, dtype=np.int64)
    step = np.full(size, COMPLEX_STEP)
    index[:n], step[:n] = np.arange(n), steps
    fn = _complex_shifted(layout)
    with jax.enable_x64(True), jax.numpy_dtype_promotion("standard"):
        zj = jnp.asarray(z)
        values = [
            np.asarray(
                fn(
                    zj,
                    jnp.asarray(index[i : i + chunk]),
                    jnp.asarray(step[i : i + chunk]),
                    data,
                )
            )
            for i in range(0, size, chunk)
        ]
    return np.concatenate(values)[:n]


# The delta rule: the numpy forward pass with complex parameters and probes.


def _delta_rule_values(
    network: Network, params: Mapping[str, Array], x: Array, d: Array
) -> tuple[Array, Array]:
    """Return ``dE/dz`` (P,) and ``dE_b/dcol`` (n_cols, batch) by complex step.

    The last point's values are kept: a mutation campaign checks many
    derivations at one point, each against the same references.
    """
    z = flat_params(network, params)
    key = (network, z.tobytes(), x.shape, x.tobytes(), d.shape, d.tobytes())
    if _LAST and _LAST[0] == key:
        return _LAST[1]
    values = _delta_rule_values_uncached(network, z, x, d)
    _LAST[:] = [key, values]
    return values


_LAST: list = []


def _delta_rule_values_uncached(
    network: Network, z: Array, x: Array, d: Array
) -> tuple[Array, Array]:
    n_cols = n_probe_columns(network)
    steps = COMPLEX_STEP * np.maximum(1.0, np.abs(z))
    g_z = np.empty(z.size)
    for start in range(0, z.size, CHUNK):
        k = np.arange(start, min(start + CHUNK, z.size))
        rows = np.broadcast_to(z, (k.size, z.size)).astype(np.complex128)
        rows[np.arange(k.size), k] += 1j * steps[k]
        g_z[k] = np.imag(row_losses(network, rows, x, d).sum(axis=1)) / steps[k]
    columns = 1j * COMPLEX_STEP * np.eye(n_cols)
    base = np.broadcast_to(z, (n_cols, z.size))
    g_cols = np.imag(row_losses(network, base, x, d, columns)) / COMPLEX_STEP
    return g_z, g_cols


def delta_rule_complex_step(
    network: Network,
    params: Mapping[str, Array],
    x: Array,
    d: Array,
    eta: float,
    references: Mapping[str, Reference],
) -> tuple[dict[str, Reference], ComplexStep]:
    """Tighten the delta rule's references with the complex step.

    The parameter gradients and updates, the error signals ``theta`` and
    the output error derivative ``dE/dy`` get the complex step, entry by
    entry where it agrees (see :func:`merge_complex_step`); ``dy/ds`` keeps
    its central difference, which is cheap and rarely the weak point.

    Returns:
        The references with merged numeric estimates, and the record.
    """
    g_z, g_cols = _delta_rule_values(network, params, x, d)
    values: dict[str, Array] = {}
    start = 0
    for name, shape in network.param_shapes().items():
        size = int(np.prod(shape))
        part = g_z[start : start + size].reshape(shape)
        values[f"dE/d{name}"] = part
        values[f"Delta {name}"] = -eta * part
        start += size
    start = 0
    for v in range(1, network.n_layers):
        n = network.sizes[v]
        values[f"theta[{v}]"] = -g_cols[start : start + n].T
        start += n
    values[f"dE/dy[{network.output_layer}]"] = g_cols[start:].T

    merged: dict[str, Reference] = {}
    codes: dict[str, NDArray[np.int64]] = {}
    for name, ref in references.items():
        if name not in values:
            merged[name] = ref
            continue
        numeric, code = merge_complex_step(
            ref.numeric, values[name], ref.autodiff, ref.rounding
        )
        merged[name] = Reference(numeric, ref.autodiff, ref.rounding)
        if not name.startswith("Delta "):  # the same entries as dE/d...
            codes[name] = code
    return merged, record(codes)
