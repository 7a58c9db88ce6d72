# SPDX-License-Identifier: MIT
"""General gradients: pytrees, plain numpy losses, probes, backward passes."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from gradcheck import (
    DerivationError,
    GradcheckError,
    GradientMismatchError,
    InvalidArgumentError,
    InvalidTypeError,
    Verdict,
    check_gradient,
    compare_gradient,
    compare_vjp,
)
from gradcheck._calibrate import quadratic_grad, quadratic_loss

RNG = np.random.default_rng(0)
X = RNG.normal(size=(5, 3))
T = RNG.normal(size=(5, 2))


def _params():
    return {"W": np.array([[0.1, -0.2], [0.3, 0.4], [-0.5, 0.6]]), "b": np.ones(2)}


def test_right_gradient_passes_with_both_references():
    result = compare_gradient(quadratic_loss, quadratic_grad, _params(), X, T)

    assert result.verdict is Verdict.PASS
    assert [q.name for q in result.quantities] == ["W", "b"]
    assert result.autodiff_skipped == ""
    assert result.n_params == 8


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda w, b: [w, b], id="list"),
        pytest.param(lambda w, b: (w, {"bias": b}), id="tuple-of-dict"),
        pytest.param(lambda w, b: {"layers": [{"W": w, "b": b}]}, id="nested"),
    ],
)
def test_any_pytree_of_parameters_is_checked(wrap):
    def unwrap(params):
        leaves = [params[0], params[1]] if isinstance(params, list) else None
        if isinstance(params, tuple):
            leaves = [params[0], params[1]["bias"]]
        if isinstance(params, dict):
            leaves = [params["layers"][0]["W"], params["layers"][0]["b"]]
        return leaves

    def loss(params, x, t):
        w, b = unwrap(params)
        return quadratic_loss({"W": w, "b": b}, x, t)

    def grad(params, x, t):
        w, b = unwrap(params)
        g = quadratic_grad({"W": w, "b": b}, x, t)
        return wrap(g["W"], 2.0 * g["b"])  # the bias gradient is wrong

    params = wrap(_params()["W"], _params()["b"])

    result = compare_gradient(loss, grad, params, X, T)

    assert result.verdict is Verdict.FAIL
    wrong = [q.name for q in result.quantities if q.verdict is Verdict.FAIL]
    assert len(wrong) == 1
    assert wrong[0] in {"[1]", "[1].bias", "layers[0].b"}
    assert result.quantity(wrong[0]).signature.kind == "double"


def test_plain_numpy_loss_is_judged_by_finite_differences_alone():
    def numpy_loss(params, x, t):
        r = np.asarray(x) @ np.asarray(params["W"]) + np.asarray(params["b"]) - t
        return 0.5 * float(np.sum(r**2))

    right = compare_gradient(numpy_loss, quadratic_grad, _params(), X, T)
    wrong = compare_gradient(
        numpy_loss,
        lambda p, x, t: {
            "W": -quadratic_grad(p, x, t)["W"],
            "b": quadratic_grad(p, x, t)["b"],
        },
        _params(),
        X,
        T,
    )

    assert right.verdict is Verdict.PASS
    assert "JAX could not trace the loss" in right.autodiff_skipped
    assert wrong.verdict is Verdict.FAIL
    assert wrong.first_wrong == "W"
    assert wrong.quantity("W").signature.kind == "sign"


# Named intermediates: a tanh layer whose derivation claims dL/ds for the
# hidden pre-activation s, through a probe added to s inside the loss.


def tanh_loss(params, x, t, probes):
    s = x @ params["W1"] + probes["dL/ds"]
    h = jnp.tanh(s)
    return 0.5 * jnp.sum((h @ params["W2"] - t) ** 2)


def _tanh_grad(params, x, t, slope):
    s = x @ params["W1"]
    h = np.tanh(s)
    r = h @ params["W2"] - t
    ds = (r @ params["W2"].T) * slope(h)
    return {"W1": x.T @ ds, "W2": h.T @ r}, {"dL/ds": ds}


def _tanh_params():
    rng = np.random.default_rng(1)
    return {"W1": rng.normal(size=(3, 4)), "W2": rng.normal(size=(4, 2))}


def test_named_intermediate_is_checked_first():
    probes = {"dL/ds": (5, 4)}

    right = compare_gradient(
        tanh_loss,
        lambda p, x, t: _tanh_grad(p, x, t, lambda h: 1.0 - h**2),
        _tanh_params(),
        X,
        T,
        probes=probes,
    )
    wrong = compare_gradient(
        tanh_loss,
        lambda p, x, t: _tanh_grad(p, x, t, lambda h: 1.0 - h),
        _tanh_params(),
        X,
        T,
        probes=probes,
    )

    assert right.verdict is Verdict.PASS
    assert [q.name for q in right.quantities] == ["dL/ds", "W1", "W2"]
    assert wrong.first_wrong == "dL/ds"
    assert wrong.quantity("W2").verdict is Verdict.PASS


def test_backward_pass_right_only_for_all_ones_cotangent_is_caught():
    def f(x):
        return jnp.sin(x) * 2.0

    def vjp_ignoring_cotangent(x, cotangent):
        return 2.0 * np.cos(x)  # right only for a cotangent of all ones

    def vjp(x, cotangent):
        return 2.0 * np.cos(x) * cotangent

    x = np.linspace(-1.0, 1.0, 6)

    assert compare_vjp(f, vjp, x).verdict is Verdict.PASS
    result = compare_vjp(f, vjp_ignoring_cotangent, x, n_cotangents=2)
    assert result.verdict is Verdict.FAIL
    assert result.first_wrong == "params @ c0"
    assert result.quantity("params @ c0").worst[0].name.endswith("] @ c0")


def test_check_gradient_message_reads_like_numpy():
    def halved(params, x, t):
        g = quadratic_grad(params, x, t)
        return {"W": g["W"], "b": 0.5 * g["b"]}

    with pytest.raises(GradientMismatchError) as info:
        check_gradient(quadratic_loss, halved, _params(), X, T, reproduce="seed 3")

    lines = str(info.value).splitlines()
    assert lines[0] == "gradient is wrong on W (3, 2), b (2,)"
    assert lines[1] == "first wrong quantity: b"
    assert any(
        line.startswith("b: mismatched entries 2 / 2; max abs discrepancy")
        and "band up to" in line
        for line in lines
    )
    assert any("likely cause:" in line and "half" in line for line in lines)
    assert any(line.startswith("  b[0]: analytic ") for line in lines)
    assert lines[-1] == "reproduce: seed 3"
    assert isinstance(info.value, AssertionError)


def test_wrong_shape_that_broadcasting_hides_fails_with_its_signature():
    def column_bias(params, x, t):
        g = quadratic_grad(params, x, t)
        return {"W": g["W"], "b": g["b"][:, None]}

    result = compare_gradient(quadratic_loss, column_bias, _params(), X, T)

    assert result.first_wrong == "b"
    assert result.quantity("b").signature.kind == "broadcast-shape"
    assert "(2, 1)" in result.quantity("b").note


def _raise(*args, **kwargs):
    raise RuntimeError("boom")


BAD_INPUTS = [
    pytest.param(
        lambda p, x, t: jnp.sum(x @ p["W"] + p["b"], axis=0),
        quadratic_grad,
        _params(),
        InvalidArgumentError,
        r"scalar, got shape \(2,\)",
        id="loss-not-scalar",
    ),
    pytest.param(
        lambda p, x, t: jnp.sum(p["W"]) * jnp.nan,
        quadratic_grad,
        _params(),
        InvalidArgumentError,
        r"finite, got nan",
        id="loss-nan",
    ),
    pytest.param(
        quadratic_loss,
        lambda p, x, t: [quadratic_grad(p, x, t)["W"]],
        _params(),
        InvalidArgumentError,
        r"same structure as params",
        id="grad-other-structure",
    ),
    pytest.param(
        quadratic_loss,
        quadratic_grad,
        {"W": np.ones((3, 2), int), "b": np.ones(2)},
        InvalidTypeError,
        r"W must be a float array, got dtype int",
        id="integer-params",
    ),
    pytest.param(
        quadratic_loss,
        quadratic_grad,
        {"W": np.ones((3, 0)), "b": np.ones(2)},
        InvalidArgumentError,
        r"W is empty \(shape \(3, 0\)\)",
        id="empty-params",
    ),
    pytest.param(
        quadratic_loss,
        quadratic_grad,
        {"W": np.full((3, 2), np.inf), "b": np.ones(2)},
        InvalidArgumentError,
        r"W must be finite",
        id="infinite-params",
    ),
    pytest.param(
        _raise,
        quadratic_grad,
        _params(),
        DerivationError,
        r"loss .* raised RuntimeError: boom",
        id="loss-raises",
    ),
    pytest.param(
        quadratic_loss,
        _raise,
        _params(),
        DerivationError,
        r"grad .* raised RuntimeError: boom",
        id="grad-raises",
    ),
    pytest.param(
        quadratic_loss,
        "not callable",
        _params(),
        InvalidTypeError,
        r"grad must be callable",
        id="grad-not-callable",
    ),
    pytest.param(
        lambda p, x, t: "small",
        quadratic_grad,
        _params(),
        InvalidTypeError,
        r"the loss must return a real number, got 'small' of type str",
        id="loss-returns-a-string",
    ),
    pytest.param(
        lambda p, x, t: None,
        quadratic_grad,
        _params(),
        InvalidTypeError,
        r"the loss must return a real number, got None",
        id="loss-returns-none",
    ),
]


@pytest.mark.parametrize(("loss", "grad", "params", "error", "match"), BAD_INPUTS)
def test_bad_input_gets_a_clear_gradcheck_error(loss, grad, params, error, match):
    with pytest.raises(error, match=match) as info:
        compare_gradient(loss, grad, params, X, T)

    assert isinstance(info.value, GradcheckError)


def test_wrong_gradient_far_below_resolution_is_never_a_pass():
    from examples import tanh_softmax as ex

    params, x, labels = ex.example_problem()
    tiny = {name: 1e-8 * value for name, value in params.items()}

    def zero_first_layer(p, x, labels):
        g = ex.grad(p, x, labels)
        return {**g, "W1": 0.0 * g["W1"], "b1": 0.0 * g["b1"]}

    right = compare_gradient(ex.loss, ex.grad, tiny, x, labels)
    wrong = compare_gradient(ex.loss, zero_first_layer, tiny, x, labels)

    assert right.verdict is Verdict.PASS
    assert wrong.verdict is not Verdict.PASS
    assert wrong.quantity("W1").verdict is not Verdict.PASS


def test_more_bad_input_is_named():
    def string_leaf(params, x, t):
        g = quadratic_grad(params, x, t)
        return {"W": g["W"], "b": np.array(["oops", "no"])}

    with pytest.raises(InvalidTypeError, match=r"grad returned b as an array of dtype"):
        compare_gradient(quadratic_loss, string_leaf, _params(), X, T)
    with pytest.raises(InvalidArgumentError, match=r"data argument 1 holds NaN or Inf"):
        compare_gradient(quadratic_loss, quadratic_grad, _params(), X, T * np.inf)
    with pytest.raises(InvalidArgumentError, match=r"batch_size=0"):
        compare_gradient(quadratic_loss, quadratic_grad, _params(), X, T, batch_size=0)


def test_plain_numpy_loss_that_raises_off_centre_is_a_derivation_error():
    centre = _params()["b"][0]

    def fragile(params, x, t):
        if float(np.asarray(params["b"])[0]) != centre:
            raise ValueError("only at the centre")
        return 0.5 * float(np.sum(np.asarray(x) @ np.asarray(params["W"])))

    with pytest.raises(DerivationError, match="only at the centre"):
        compare_gradient(fragile, quadratic_grad, _params(), X, T)


def test_skipped_autodiff_leaves_no_autodiff_values_behind():
    def numpy_loss(params, x, t):
        r = np.asarray(x) @ np.asarray(params["W"]) + np.asarray(params["b"]) - t
        return 0.5 * float(np.sum(r**2))

    result = compare_gradient(numpy_loss, quadratic_grad, _params(), X, T)

    assert all(np.isnan(w.autodiff) for q in result.quantities for w in q.worst)
    assert result.to_dict()["autodiff_skipped"].startswith("JAX could not trace")


def test_inconclusive_check_warns_and_result_repr_is_short():
    from examples import tanh_softmax as ex
    from gradcheck import InconclusiveWarning

    params, x, labels = ex.example_problem()
    tiny = {name: 1e-8 * value for name, value in params.items()}

    def zero_first_layer(p, x, labels):
        g = ex.grad(p, x, labels)
        return {**g, "W1": 0.0 * g["W1"]}

    # Central differences alone cannot resolve gradients this small.
    with pytest.warns(InconclusiveWarning, match=r"inconclusive on \['W1'\]"):
        result = check_gradient(
            ex.loss, zero_first_layer, tiny, x, labels, complex_step=False
        )

    assert repr(result).startswith("CheckResult(verdict='inconclusive'")
    assert len(repr(result)) < 200


def test_complex_step_resolves_a_mistake_far_below_central_differences():
    from examples import tanh_softmax as ex

    params, x, labels = ex.example_problem()
    tiny = {name: 1e-8 * value for name, value in params.items()}

    def zero_first_layer(p, x, labels):
        g = ex.grad(p, x, labels)
        return {**g, "W1": 0.0 * g["W1"]}

    result = compare_gradient(ex.loss, zero_first_layer, tiny, x, labels)

    assert result.verdict == "fail"
    assert result.first_wrong == "W1"
    assert result.numeric_reference == "complex step"


def test_scalar_parameter_leaves_are_checked_with_the_complex_step():
    def loss(p):
        return p["a"] ** 3 + jnp.sum(p["b"] ** 2)

    def grad(p):
        return {"a": 3 * p["a"] ** 2, "b": 2 * p["b"]}

    params = {"a": np.array(2.0), "b": np.array([0.5, -1.0])}

    result = compare_gradient(loss, grad, params)

    assert result.verdict is Verdict.PASS
    assert result.complex_step.status == "used"
    assert result.quantity("a").shape == ()


@pytest.mark.parametrize(
    ("probes", "message"),
    [
        ({"h": "x"}, r"got 'h': 'x'"),
        ({"h": (0,)}, r"got 'h': \(0,\)"),
        (["h"], r"probes must map names to shapes, got \['h'\]"),
    ],
)
def test_malformed_probes_are_named(probes, message):
    def loss(p, x, t, probes=None):
        return quadratic_loss(p, x, t)

    with pytest.raises(GradcheckError, match=message):
        compare_gradient(loss, quadratic_grad, _params(), X, T, probes=probes)


@pytest.mark.parametrize("role", ["f", "vjp"])
def test_vjp_check_names_a_function_that_is_not_callable(role):
    functions = {"f": jnp.sin, "vjp": lambda x, c: np.cos(x) * c}
    functions[role] = None

    with pytest.raises(InvalidTypeError, match=rf"^{role} must be callable, got None"):
        compare_vjp(functions["f"], functions["vjp"], np.linspace(-1.0, 1.0, 4))
