# SPDX-License-Identifier: MIT
"""A catalogue of classic derivation mistakes, to measure gradcheck itself.

A *mutant* is a whole derivation with one classic mistake in it: the
sigmoid's slope written ``y (1 + y)``, the skip successors left out of
``Suc(h)``, the learning rate applied twice. Each has a name, a one-line
description, and the quantity it *touches*: the step of the derivation the
mistake changes, in gradcheck's quantity names (``theta[L]``,
``dE/dW[u->L]``). ``python -m gradcheck mutants`` (``nox -s mutants``)
runs every mutant on generated networks and reports, per mutant, how often
gradcheck caught it, whether it named the touched quantity first, and how
many generated examples it needed.

Patterns in ``touches`` name layers by letter: ``L`` is the output layer
(``L-1`` the one below it), ``h`` any hidden layer, ``u`` and ``v`` any
layer; a number is that layer. On a given network the expected first wrong
quantity is the first name in the document's order that matches, unless the
mutant brings a ``locate`` function that knows better (the highest hidden
layer with a skip connection, say).

Register your own::

    from gradcheck import mutants

    def my_backprop(network, params, x, d, eta):
        ...  # the signature of gradcheck.delta_rule

    mutants.register(
        "my-mistake",
        my_backprop,
        description="the slope of the output layer squared",
        touches="dy/ds[L]",
    )
    [m.name for m in mutants.catalogue()]

Mutants of other derivations (checked with
:func:`gradcheck.compare_gradient`) name a :class:`GradientModel`: the loss,
the right gradient, and a Hypothesis strategy of points. The built-in
:data:`TANH_SOFTMAX` model carries two.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import strategies as st

from gradcheck import _softmax_model
from gradcheck._delta_mutants import DELTA_RULE_MUTANTS
from gradcheck._delta_rule import QUANTITY_KINDS, delta_rule, quantity_names
from gradcheck._networks import Network
from gradcheck.errors import InvalidArgumentError, InvalidTypeError

__all__ = [
    "DELTA_RULE",
    "GradientModel",
    "Mutant",
    "TANH_SOFTMAX",
    "catalogue",
    "get",
    "register",
    "right_derivation",
    "unregister",
]

# The model every delta-rule mutant belongs to.
DELTA_RULE = "delta rule"

_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")
_LAYER = r"(\d+|L(?:-\d+)?|[huv])"
_UNIT_KINDS = "|".join(re.escape(k) for k in QUANTITY_KINDS if k[-1] not in "W")
_EDGE_KINDS = "dE/dW|Delta W"
_PATTERN = re.compile(
    rf"(?P<kind>{_UNIT_KINDS})\[(?P<v>{_LAYER})\]"
    rf"|(?P<ekind>{_EDGE_KINDS})\[(?P<eu>{_LAYER})->(?P<ev>{_LAYER})\]"
)


@dataclass(frozen=True)
class GradientModel:
    """A loss with its right hand-derived gradient, for gradient mutants.

    Attributes:
        name: the model's name in reports.
        loss: ``loss(params, *data, probes=None) -> scalar`` in jax.numpy.
        grad: the right derivation, ``grad(params, *data) ->
            (param_grads, {probe: dL/dprobe})``.
        cases: a Hypothesis strategy of points, each with ``params``,
            ``data`` (a tuple), ``probes`` (name to shape) and
            ``describe()``.
        quantities: every quantity a check names, in the order it checks
            them (probes first, then the parameters in pytree order).
    """

    name: str
    loss: Callable[..., object]
    grad: Callable[..., object]
    cases: st.SearchStrategy
    quantities: tuple[str, ...]


TANH_SOFTMAX = GradientModel(
    name="tanh-softmax",
    loss=_softmax_model.loss,
    grad=_softmax_model.grad,
    cases=_softmax_model.softmax_cases(),
    quantities=("dL/dz", "dL/ds", "W1", "W2", "b1", "b2"),
)


@dataclass(frozen=True)
class Mutant:
    """One derivation with one classic mistake.

    Attributes:
        name: a short unique name, lowercase with dashes.
        description: the mistake in one line.
        touches: the step the mistake changes, as a quantity name or a
            pattern (see the module docstring).
        derivation: the derivation itself, with the signature of
            :func:`gradcheck.delta_rule` (or of the model's ``grad``).
        model: :data:`DELTA_RULE` or the :class:`GradientModel` it mutates.
        locate: ``locate(network) -> name or None``, where the mistake
            first shows on a network, when matching ``touches`` in the
            document's order is not precise enough; ``None`` when it cannot
            show there at all.
        builtin: whether gradcheck ships it.
    """

    name: str
    description: str
    touches: str
    derivation: Callable[..., object]
    model: str | GradientModel = DELTA_RULE
    locate: Callable[[Network], str | None] | None = field(default=None, repr=False)
    builtin: bool = False

    @property
    def model_name(self) -> str:
        """The name of the model it mutates, for reports."""
        return self.model if isinstance(self.model, str) else self.model.name

    def expected_first(self, network: Network | None = None) -> str | None:
        """Return the quantity a check should name first, on ``network``.

        For a delta-rule mutant, the first quantity in the document's order
        that ``touches`` matches (or what ``locate`` says); for a gradient
        mutant, ``touches`` itself.
        """
        if isinstance(self.model, GradientModel):
            return self.touches
        if network is None:
            raise InvalidArgumentError(
                f"the delta-rule mutant {self.name!r} needs a network to say "
                "where it shows",
                name="network",
                value=network,
            )
        if self.locate is not None:
            return self.locate(network)
        return _first_match(self.touches, network)


def _layer_matches(token: str, layer: int, network: Network) -> bool:
    out = network.output_layer
    if token.isdigit():
        return int(token) == layer
    if token.startswith("L"):
        return layer == out - int(token[2:] or 0)
    if token == "h":
        return 0 < layer < out
    return True  # u and v: any layer


def _first_match(touches: str, network: Network) -> str | None:
    """Return the first quantity of ``network``, in order, that matches."""
    pattern = _PATTERN.fullmatch(touches)
    if pattern is None:
        return None
    for name in quantity_names(network):
        found = _PATTERN.fullmatch(name)
        if found is None:
            continue
        if pattern["kind"] and found["kind"] == pattern["kind"]:
            if _layer_matches(pattern["v"], int(found["v"]), network):
                return name
        elif pattern["ekind"] and found["ekind"] == pattern["ekind"]:
            u, v = int(found["eu"]), int(found["ev"])
            if _layer_matches(pattern["eu"], u, network) and _layer_matches(
                pattern["ev"], v, network
            ):
                return name
    return None


_REGISTRY: dict[str, Mutant] = {}


def _check_text(value: object, what: str, example: str) -> str:
    if not isinstance(value, str):
        raise InvalidTypeError(
            f"{what} must be a string, got {what}={value!r}", name=what, value=value
        )
    if not value.strip() or "\n" in value:
        raise InvalidArgumentError(
            f"{what} must be one non-empty line, for example {example!r}, "
            f"got {what}={value!r}",
            name=what,
            value=value,
        )
    return value.strip()


def _check_touches(touches: str, model: str | GradientModel) -> None:
    if isinstance(model, GradientModel):
        if touches not in model.quantities:
            raise InvalidArgumentError(
                f"touches must name a quantity of the model {model.name!r}, one "
                f"of {list(model.quantities)}, got touches={touches!r}",
                name="touches",
                value=touches,
            )
        return
    if _PATTERN.fullmatch(touches) is None:
        raise InvalidArgumentError(
            "touches must be a delta-rule quantity such as 'theta[L]', "
            "'dy/ds[h]', 'dE/dW[u->L]' or 'Delta W[1->2]' (kinds "
            f"{list(QUANTITY_KINDS)}; layers a number, L, L-1, h, u or v), "
            f"got touches={touches!r}",
            name="touches",
            value=touches,
        )


def register(
    name: str,
    derivation: Callable[..., object],
    *,
    description: str,
    touches: str,
    model: GradientModel | None = None,
    locate: Callable[[Network], str | None] | None = None,
    replace: bool = False,
) -> Mutant:
    """Add a mutant to the catalogue.

    Args:
        name: a unique name, lowercase letters, digits, ``-``, ``_``, ``.``.
        derivation: the derivation with its mistake; the signature of
            :func:`gradcheck.delta_rule`, or of ``model.grad``.
        description: the mistake in one line.
        touches: the step the mistake changes: a delta-rule quantity or
            pattern (``theta[L]``, ``dE/dW[u->L]``), or for a gradient
            model one of ``model.quantities``.
        model: the :class:`GradientModel` it mutates; the delta rule when
            omitted.
        locate: ``locate(network) -> quantity name or None``, where the
            mistake first shows, when ``touches`` alone is not precise.
        replace: replace a mutant of yours registered under ``name``.

    Returns:
        The registered :class:`Mutant`.

    Raises:
        InvalidTypeError: an argument of the wrong type.
        InvalidArgumentError: a malformed or taken name, an empty or
            multi-line description, or a ``touches`` that names no quantity.
    """
    name = _check_text(name, "name", "sign-flipped")
    if not _NAME.fullmatch(name):
        raise InvalidArgumentError(
            "name must be lowercase letters, digits, '-', '_' or '.', starting "
            f"with a letter or digit, got name={name!r}",
            name="name",
            value=name,
        )
    if not callable(derivation):
        raise InvalidTypeError(
            f"derivation must be callable, got derivation={derivation!r}",
            name="derivation",
            value=derivation,
        )
    description = _check_text(description, "description", "theta_o without y(1-y)")
    touches = _check_text(touches, "touches", "theta[L]")
    if model is not None and not isinstance(model, GradientModel):
        raise InvalidTypeError(
            f"model must be a gradcheck.mutants.GradientModel or None, got "
            f"model={model!r}",
            name="model",
            value=model,
        )
    _check_touches(touches, model or DELTA_RULE)
    if locate is not None and not callable(locate):
        raise InvalidTypeError(
            f"locate must be callable or None, got locate={locate!r}",
            name="locate",
            value=locate,
        )
    taken = _REGISTRY.get(name)
    if taken is not None and (taken.builtin or not replace):
        why = (
            "it is built in"
            if taken.builtin
            else "pass replace=True to replace it, or choose another name"
        )
        raise InvalidArgumentError(
            f"a mutant named {name!r} is already registered; {why}",
            name="name",
            value=name,
        )
    mutant = Mutant(
        name=name,
        description=description,
        touches=touches,
        derivation=derivation,
        model=model or DELTA_RULE,
        locate=locate,
    )
    _REGISTRY[name] = mutant
    return mutant


def unregister(name: str) -> None:
    """Remove a mutant you registered.

    Raises:
        InvalidArgumentError: no such mutant, or a built-in one.
    """
    mutant = get(name)
    if mutant.builtin:
        raise InvalidArgumentError(
            f"the mutant {name!r} is built in and cannot be removed",
            name="name",
            value=name,
        )
    del _REGISTRY[name]


def get(name: str) -> Mutant:
    """Return the mutant called ``name``.

    Raises:
        InvalidArgumentError: no mutant has that name.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise InvalidArgumentError(
            f"no mutant is named {name!r}; the catalogue has {sorted(_REGISTRY)}",
            name="name",
            value=name,
        ) from None


def catalogue(model: str | GradientModel | None = None) -> tuple[Mutant, ...]:
    """Return the mutants, built-in ones first, in the order registered.

    Args:
        model: only the mutants of this model (:data:`DELTA_RULE`, a
            :class:`GradientModel`, or its name); all when omitted.
    """
    mutants = tuple(_REGISTRY.values())
    if model is None:
        return mutants
    wanted = model if isinstance(model, str) else model.name
    return tuple(m for m in mutants if m.model_name == wanted)


def right_derivation(model: str | GradientModel = DELTA_RULE) -> Callable[..., object]:
    """Return the right derivation of a model, the one mutants are measured by."""
    if isinstance(model, GradientModel):
        return model.grad
    return delta_rule


def _builtin(mutant: Mutant) -> None:
    _REGISTRY[mutant.name] = mutant


for _name, _description, _touches, _derivation, _locate in DELTA_RULE_MUTANTS:
    _builtin(
        Mutant(
            name=_name,
            description=_description,
            touches=_touches,
            derivation=_derivation,
            locate=_locate,
            builtin=True,
        )
    )
_builtin(
    Mutant(
        name="tanh-slope-one-minus-y",
        description="tanh' written 1 - y instead of 1 - y^2",
        touches="dL/ds",
        derivation=_softmax_model.grad_tanh_slope_one_minus_y,
        model=TANH_SOFTMAX,
        builtin=True,
    )
)
_builtin(
    Mutant(
        name="softmax-jacobian-diagonal",
        description="the softmax Jacobian reduced to its diagonal p (1 - p)",
        touches="dL/dz",
        derivation=_softmax_model.grad_softmax_jacobian_diagonal,
        model=TANH_SOFTMAX,
        builtin=True,
    )
)
