"""Discrete optimizers against independent ground truth (docs/theory.md §2), and the hyperparameter record.

The reference for SGD, Adam, AdamW and RMSprop is ``torch.optim`` itself, fed the same
gradient sequences through ``p.grad``; RMSpropW (decay on the old ``x``) and SignSGD,
which torch does not have, are checked against a hand-written NumPy transcription of
docs/theory.md §2.  Scaling rules are checked against docs/theory.md §6's table, written out here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optsde.noise import GaussianNoise
from optsde.optimizers import OPTIMIZERS, HyperparameterError, Hyperparameters, get_optimizer
from optsde.optimizers.adam import ADAM_SPEC, ADAMW_SPEC, AdamW
from optsde.optimizers.rmsprop import RMSPROP_SPEC, RMSPROPW_SPEC, RMSpropW
from optsde.optimizers.sgd import SGD, SGD_SPEC
from optsde.optimizers.signsgd import SIGNSGD_SPEC, SignSGD
from optsde.problems import NoisyProblem, Quadratic
from optsde.sde import DiscreteRunner, simulate

PATHS, DIM, STEPS = 3, 5, 60  # ≥ 50 steps so Adam's bias correction 1/(1 − β^k) changes a lot


def gradient_sequence(kind: str, dtype: torch.dtype, seed: int) -> list[torch.Tensor]:
    """``STEPS`` gradients of shape ``(PATHS, DIM)``, generated independently of optsde."""
    g = torch.Generator().manual_seed(seed)
    shape = (STEPS, PATHS, DIM)
    if kind == "normal":
        grads = torch.randn(shape, generator=g, dtype=torch.float64)
    elif kind == "drifting":
        # A persistent mean plus noise: momentum and second moment build up consistently.
        grads = 0.5 + 0.2 * torch.randn(shape, generator=g, dtype=torch.float64)
    elif kind == "multiscale":
        # Coordinates and steps spanning six orders of magnitude, sign flips included.
        scales = 10.0 ** torch.empty(shape, dtype=torch.float64).uniform_(-4, 2, generator=g)
        grads = scales * torch.randn(shape, generator=g, dtype=torch.float64)
    elif kind == "heavy-tailed":
        # Cauchy: a ratio of independent normals; occasional huge and tiny gradients.
        grads = torch.randn(shape, generator=g, dtype=torch.float64) / torch.randn(
            shape, generator=g, dtype=torch.float64
        )
    else:
        raise ValueError(kind)
    return list(grads.to(dtype))


def start_point(dtype: torch.dtype) -> torch.Tensor:
    return torch.linspace(-1.5, 2.0, PATHS * DIM, dtype=dtype).reshape(PATHS, DIM)


def schedule(k: int) -> float:
    """A warm-up then cosine decay, evaluated at the (1-based) step index."""
    return min(1.0, k / 10) * 0.5 * (1 + math.cos(math.pi * k / (2 * STEPS)))


def tolerances(dtype: torch.dtype) -> dict[str, float]:
    # Same arithmetic in a different order (torch uses lerp/addcdiv, fused kernels):
    # differences are rounding errors, amplified a little over STEPS steps.
    return {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 2e-5, "atol": 2e-6}


def run_ours(optimizer, hp: Hyperparameters, grads, x0, scheduled: bool):
    state = optimizer.init_state(x0)
    for k, g in enumerate(grads, start=1):
        lr = hp.lr * (schedule(k) if scheduled else 1.0)
        state = optimizer.step(state, g, hp, lr)
    return state


def run_torch(make_optimizer, grads, x0, lr: float, scheduled: bool):
    p = torch.nn.Parameter(x0.clone())
    opt = make_optimizer([p])
    for k, g in enumerate(grads, start=1):
        for group in opt.param_groups:
            group["lr"] = lr * (schedule(k) if scheduled else 1.0)
        p.grad = g.clone()
        opt.step()
    return p.detach(), opt.state[p]


DTYPES = [torch.float64, torch.float32]
KINDS = ["normal", "drifting", "multiscale", "heavy-tailed"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scheduled", [False, True])
@pytest.mark.parametrize(
    "hp",
    [
        Hyperparameters(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1),
        Hyperparameters(lr=0.05, beta1=0.5, beta2=0.9, eps=1e-3, weight_decay=0.01),
        Hyperparameters(lr=0.2, beta1=0.0, beta2=0.99, eps=1e-6, weight_decay=1.0),
    ],
    ids=["default-betas", "short-memory", "no-momentum"],
)
def test_adamw_matches_torch(hp, scheduled, kind, dtype):
    grads = gradient_sequence(kind, dtype, seed=KINDS.index(kind))
    x0 = start_point(dtype)
    ours = run_ours(AdamW(), hp, grads, x0, scheduled)
    theirs, state = run_torch(
        lambda params: torch.optim.AdamW(
            params, lr=hp.lr, betas=(hp.beta1, hp.beta2), eps=hp.eps, weight_decay=hp.weight_decay
        ),
        grads,
        x0,
        hp.lr,
        scheduled,
    )
    assert ours.x.dtype == dtype
    assert ours.step == int(state["step"]) == STEPS
    torch.testing.assert_close(ours.m, state["exp_avg"], **tolerances(dtype))
    torch.testing.assert_close(ours.v, state["exp_avg_sq"], **tolerances(dtype))
    torch.testing.assert_close(ours.x, theirs, **tolerances(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scheduled", [False, True])
def test_adamw_without_decay_matches_torch_adam(kind, dtype, scheduled):
    hp = Hyperparameters(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8)
    grads = gradient_sequence(kind, dtype, seed=10 + KINDS.index(kind))
    x0 = start_point(dtype)
    ours = run_ours(ADAM_SPEC.discrete, hp, grads, x0, scheduled)
    theirs, state = run_torch(
        lambda params: torch.optim.Adam(params, lr=hp.lr, betas=(hp.beta1, hp.beta2), eps=hp.eps),
        grads,
        x0,
        hp.lr,
        scheduled,
    )
    torch.testing.assert_close(ours.v, state["exp_avg_sq"], **tolerances(dtype))
    torch.testing.assert_close(ours.x, theirs, **tolerances(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scheduled", [False, True])
@pytest.mark.parametrize("beta2,eps", [(0.99, 1e-8), (0.9, 1e-3)])
def test_rmsprop_matches_torch(beta2, eps, kind, dtype, scheduled):
    hp = Hyperparameters(lr=0.01, beta2=beta2, eps=eps)
    grads = gradient_sequence(kind, dtype, seed=20 + KINDS.index(kind))
    x0 = start_point(dtype)
    ours = run_ours(RMSpropW(), hp, grads, x0, scheduled)
    theirs, state = run_torch(
        lambda params: torch.optim.RMSprop(params, lr=hp.lr, alpha=beta2, eps=eps),
        grads,
        x0,
        hp.lr,
        scheduled,
    )
    torch.testing.assert_close(ours.v, state["square_avg"], **tolerances(dtype))
    torch.testing.assert_close(ours.x, theirs, **tolerances(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scheduled", [False, True])
def test_sgd_matches_torch(kind, dtype, scheduled):
    hp = Hyperparameters(lr=0.03)
    grads = gradient_sequence(kind, dtype, seed=30 + KINDS.index(kind))
    x0 = start_point(dtype)
    ours = run_ours(SGD(), hp, grads, x0, scheduled)
    theirs, _ = run_torch(lambda params: torch.optim.SGD(params, lr=hp.lr), grads, x0, hp.lr, scheduled)
    torch.testing.assert_close(ours.x, theirs, **tolerances(dtype))


def numpy_rmspropw(x0, grads, lr, beta, eps, theta, schedule_fn):
    """docs/theory.md §2 transcribed: ``v ← βv + (1−β)g²``; ``x ← x − η g/(√v+ε) − ηθ x`` (x the old
    iterate)."""
    x, v = x0.copy(), np.zeros_like(x0)
    for k, g in enumerate(grads, start=1):
        eta = lr * schedule_fn(k)
        v = beta * v + (1 - beta) * g * g
        x = x - eta * g / (np.sqrt(v) + eps) - eta * theta * x
    return x, v


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("theta", [0.1, 2.0])
@pytest.mark.parametrize("scheduled", [False, True])
def test_rmspropw_decay_matches_spec_formula(kind, theta, scheduled):
    hp = Hyperparameters(lr=0.02, beta2=0.95, eps=1e-6, weight_decay=theta)
    grads = gradient_sequence(kind, torch.float64, seed=40 + KINDS.index(kind))
    x0 = start_point(torch.float64)
    ours = run_ours(RMSpropW(), hp, grads, x0, scheduled)
    x_ref, v_ref = numpy_rmspropw(
        x0.numpy(),
        [g.numpy() for g in grads],
        hp.lr,
        hp.beta2,
        hp.eps,
        theta,
        schedule if scheduled else (lambda k: 1.0),
    )
    np.testing.assert_allclose(ours.v.numpy(), v_ref, rtol=1e-12, atol=0)
    np.testing.assert_allclose(ours.x.numpy(), x_ref, rtol=1e-10, atol=1e-12)


def test_rmspropw_decay_differs_from_torch_coupled_decay():
    """torch's RMSprop ``weight_decay`` is an L2 term added to g (coupled); ours is decoupled.

    Guards against silently "fixing" parity by coupling the decay: the two must differ.
    """
    hp = Hyperparameters(lr=0.02, beta2=0.95, eps=1e-6, weight_decay=0.5)
    grads = gradient_sequence("normal", torch.float64, seed=50)
    x0 = start_point(torch.float64)
    ours = run_ours(RMSpropW(), hp, grads, x0, scheduled=False)
    coupled, _ = run_torch(
        lambda params: torch.optim.RMSprop(params, lr=hp.lr, alpha=hp.beta2, eps=hp.eps, weight_decay=0.5),
        grads,
        x0,
        hp.lr,
        scheduled=False,
    )
    assert (ours.x - coupled).abs().max() > 1e-3


@pytest.mark.parametrize("kind", KINDS)
def test_signsgd_matches_spec_formula(kind):
    grads = gradient_sequence(kind, torch.float64, seed=60 + KINDS.index(kind))
    grads[3][0, 0] = 0.0  # sign(0) = 0: no move
    x0 = start_point(torch.float64)
    ours = run_ours(SignSGD(), Hyperparameters(lr=0.01), grads, x0, scheduled=True)
    x = x0.numpy().copy()
    for k, g in enumerate(grads, start=1):
        x = x - 0.01 * schedule(k) * np.sign(g.numpy())
    np.testing.assert_allclose(ours.x.numpy(), x, rtol=1e-12, atol=1e-14)


class ReplayedNoise:
    """Gradient noise replayed from a list, so torch can be fed exactly what optsde saw.
    A Python side effect per call: not compilable, so the engine runs it step by step."""

    compilable = False

    def __init__(self, problem: NoisyProblem, noise: list[torch.Tensor]):
        self.problem, self.noise, self.calls = problem, noise, 0
        self.dim = problem.dim

    def __getattr__(self, name):
        return getattr(self.problem, name)

    def sample_gradient(self, x, generator):
        z = self.noise[self.calls]
        self.calls += 1
        return self.problem.grad(x) + z


@pytest.mark.parametrize("name", ["sgd", "rmsprop", "adam", "adamw"])
def test_discrete_runner_with_schedule_matches_torch_lambda_lr(name):
    """End to end: ``simulate`` with a schedule φ against torch.optim + ``LambdaLR(φ)``.

    ``LambdaLR`` multiplies the rate of the k-th ``step()`` (k = 1, 2, …) by φ(k − 1);
    optsde's runners use the same convention (and the SDE runner evaluates φ at t/η,
    the start of the step), so the two trajectories coincide.
    """
    spec = get_optimizer(name)
    hp = Hyperparameters(
        lr=0.05, beta1=0.8, beta2=0.95, eps=1e-6, weight_decay=0.3 if spec.decoupled_decay else 0
    )
    h = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64)
    problem = NoisyProblem(Quadratic(h), GaussianNoise(3, scale=0.3))
    g = torch.Generator().manual_seed(70)
    noise = list(0.3 * torch.randn(STEPS, PATHS, 3, generator=g, dtype=torch.float64))
    x0 = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)

    def phi(step: float) -> float:
        return 1.0 / (1.0 + 0.1 * step)

    rec = simulate(
        DiscreteRunner(spec.discrete),
        ReplayedNoise(problem, noise),
        hp,
        x0,
        paths=PATHS,
        steps=STEPS,
        record_at=[STEPS],
        observables={"x": lambda state, oracle: state.x},
        schedule=phi,
    )

    p = torch.nn.Parameter(x0.expand(PATHS, 3).clone())
    kwargs = {"lr": hp.lr}
    opt = {
        "sgd": lambda: torch.optim.SGD([p], **kwargs),
        "rmsprop": lambda: torch.optim.RMSprop([p], alpha=hp.beta2, eps=hp.eps, **kwargs),
        "adam": lambda: torch.optim.Adam([p], betas=(hp.beta1, hp.beta2), eps=hp.eps, **kwargs),
        "adamw": lambda: torch.optim.AdamW(
            [p], betas=(hp.beta1, hp.beta2), eps=hp.eps, weight_decay=hp.weight_decay, **kwargs
        ),
    }[name]()
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, phi)
    for z in noise:
        p.grad = p.detach() * h + z
        opt.step()
        scheduler.step()
    np.testing.assert_allclose(rec.values["x"][-1], p.detach().numpy(), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- hyperparameters and scaling rules


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lr": 0.0},
        {"lr": -1e-3},
        {"lr": math.nan},
        {"lr": math.inf},
        {"lr": 0.1, "beta1": 1.0},
        {"lr": 0.1, "beta1": -0.1},
        {"lr": 0.1, "beta2": 1.0},
        {"lr": 0.1, "eps": -1e-8},
        {"lr": 0.1, "weight_decay": -0.1},
        {"lr": 0.1, "weight_decay": math.nan},
    ],
)
def test_invalid_hyperparameters_are_refused(kwargs):
    with pytest.raises(HyperparameterError):
        Hyperparameters(**kwargs)


def test_rates_round_trip():
    hp = Hyperparameters(lr=0.004, beta1=0.9, beta2=0.999)
    assert hp.rho1 == pytest.approx((1 - 0.9) / 0.004)
    assert hp.rho2 == pytest.approx((1 - 0.999) / 0.004)
    back = Hyperparameters.from_rates(0.004, hp.rho1, hp.rho2)
    assert back.beta1 == pytest.approx(0.9, abs=1e-15)
    assert back.beta2 == pytest.approx(0.999, abs=1e-15)


def test_decay_refused_where_the_optimizer_has_none():
    hp = Hyperparameters(lr=0.01, weight_decay=0.1)
    ADAMW_SPEC.check(hp)
    RMSPROPW_SPEC.check(hp)
    for spec in (ADAM_SPEC, RMSPROP_SPEC, SGD_SPEC, SIGNSGD_SPEC):
        with pytest.raises(HyperparameterError, match="weight_decay"):
            spec.check(hp)


def test_get_optimizer():
    assert get_optimizer("AdamW") is ADAMW_SPEC
    with pytest.raises(HyperparameterError, match="adamw"):
        get_optimizer("lion")


BASE = Hyperparameters(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.5)
RULES = [(spec, rule) for spec in OPTIMIZERS.values() for rule in spec.scaling_rules]


@pytest.mark.parametrize("spec,rule", RULES, ids=[f"{s.name}-{r}" for s, r in RULES])
@pytest.mark.parametrize("delta", [2.0, 4.0, 0.25, 1.7])
def test_rescale_then_inverse_is_identity(spec, rule, delta):
    hp = BASE if spec.decoupled_decay else BASE.with_(weight_decay=0.0)
    there = spec.rescale(hp, delta, rule)
    back = spec.rescale(there, 1.0 / delta, rule)
    for name in ("lr", "beta1", "beta2", "eps", "weight_decay"):
        assert getattr(back, name) == pytest.approx(getattr(hp, name), rel=1e-12, abs=1e-15), name


@pytest.mark.parametrize("delta", [2.0, 4.0, 0.5])
def test_rescale_follows_spec_table(delta):
    """docs/theory.md §6, written out independently of the code."""
    root = math.sqrt(delta)
    hp = BASE
    paper = ADAMW_SPEC.rescale(hp, delta, "paper")
    assert paper.lr == pytest.approx(root * hp.lr)
    assert paper.beta1 == pytest.approx(1 - root * (1 - hp.beta1))
    assert paper.beta2 == pytest.approx(1 - root * (1 - hp.beta2))
    assert paper.weight_decay == pytest.approx(root * hp.weight_decay)
    assert paper.eps == hp.eps

    malladi = ADAM_SPEC.rescale(hp.with_(weight_decay=0.0), delta, "malladi")
    assert malladi.lr == pytest.approx(root * hp.lr)
    assert malladi.beta1 == pytest.approx(1 - delta * (1 - hp.beta1))
    assert malladi.beta2 == pytest.approx(1 - delta * (1 - hp.beta2))
    assert malladi.eps == pytest.approx(hp.eps / root)

    linear = SGD_SPEC.rescale(hp, delta, "linear")
    assert linear.lr == pytest.approx(delta * hp.lr)
    # Fields SGD does not use are left as they were.
    assert (linear.beta1, linear.beta2, linear.eps, linear.weight_decay) == (
        hp.beta1,
        hp.beta2,
        hp.eps,
        hp.weight_decay,
    )

    rms = RMSPROP_SPEC.rescale(hp, delta, "paper")
    assert rms.beta2 == pytest.approx(1 - root * (1 - hp.beta2))
    assert rms.beta1 == hp.beta1  # RMSprop has no β₁


def test_paper_rule_keeps_rates_rho_and_theta_over_eta():
    """η → √δη and 1−β → √δ(1−β) leave ρ = (1−β)/η unchanged: the SDE's memory time is kept."""
    for delta in (2.0, 9.0):
        scaled = ADAMW_SPEC.rescale(BASE, delta, "paper")
        assert scaled.rho1 == pytest.approx(BASE.rho1)
        assert scaled.rho2 == pytest.approx(BASE.rho2)


@pytest.mark.parametrize(
    "spec,rule,delta,field",
    [
        (ADAMW_SPEC, "paper", 121.0, "beta1"),  # 1 − 11·0.1 < 0
        (ADAM_SPEC, "malladi", 20.0, "beta1"),  # 1 − 20·0.1 < 0
        (RMSPROP_SPEC, "malladi", 1001.0, "beta2"),  # 1 − 1001·0.001 < 0
    ],
)
def test_rescale_refuses_betas_outside_unit_interval(spec, rule, delta, field):
    hp = BASE if spec.decoupled_decay else BASE.with_(weight_decay=0.0)
    with pytest.raises(HyperparameterError, match=field):
        spec.rescale(hp, delta, rule)


def test_rescale_ignores_betas_the_optimizer_does_not_use():
    # β₁ = 0.9 would become negative under δ = 400, but RMSprop has no β₁.
    hp = BASE.with_(weight_decay=0.0)
    scaled = RMSPROP_SPEC.rescale(hp, 400.0, "paper")
    assert scaled.beta1 == hp.beta1
    assert scaled.beta2 == pytest.approx(1 - 20 * (1 - hp.beta2))


@pytest.mark.parametrize("delta", [0.0, -2.0, math.nan, math.inf])
def test_rescale_refuses_bad_delta(delta):
    with pytest.raises(HyperparameterError, match="δ"):
        ADAMW_SPEC.rescale(BASE, delta, "paper")


def test_rescale_refuses_unknown_rule():
    with pytest.raises(HyperparameterError, match="paper"):
        ADAMW_SPEC.rescale(BASE, 2.0, "linear")
