"""Theory's predictions for one setting, each with its regime of validity (docs/theory.md §8).

A :class:`Setting` is what ``optsde simulate`` runs: an optimizer on the diagonal quadratic
``f = ½ Σ h_i x_i²`` with Gaussian or Student-t noise of scale ``s = σ/√B`` per coordinate.
:func:`predictions` returns every :class:`Prediction` the theory has for it: the stationary
loss and per-coordinate second moment by each formula, SignSGD's phases and lattice, the
loss bounds, the noise-scaling exponent and the heavy-tail factor.  Each record says whether
the setting is inside the formula's regime (``valid``) and which formula is recommended
(exactly one per quantity).

How ``valid`` is decided.  Each family has a *reference* law for its stationary moments:
exact for SGD (the AR(1) recursion) and SignSGD (the birth–death chain on its lattice), and
for RMSprop(W)/Adam(W) the discrete linearisation with the self-consistent preconditioner,
measured within 2% of the optimizer under its assumptions (docs/theory.md §8).  A formula is
valid in a coordinate where it agrees with the reference within ``5% − (the reference's own
accuracy)``, so a valid formula is within 5% of the optimizer; in κ = η·h/s this is a
regime such as "κ ≲ 0.07", which the regime text states (:func:`regime_statement`).  A bound
is valid where it bounds the reference.

Each optimizer family declares which theory it follows (``spec.capabilities.theory``, in its own
module); :data:`FAMILIES` maps that theory to its predictions, so nothing here dispatches on an
optimizer's name.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from optsde.errors import OptsdeError
from optsde.optimizers import Hyperparameters, get_optimizer
from optsde.optimizers.signsgd import PhaseThresholds, phase2_drift_bounds
from optsde.theory import adaptive, sgd, signsgd

NOISES = ("gaussian", "student-t")

FORMULA_TOLERANCE = 0.05
"""A formula flagged valid is within this relative error of the optimizer."""


class PredictionError(OptsdeError):
    """A setting the predictions cannot be made for; the message says what to change."""


@dataclass(frozen=True)
class Setting:
    """An optimizer on ``f = ½ Σ h_i x_i²`` with additive noise of scale ``σ/√B`` per coordinate.

    The names and defaults are ``optsde simulate``'s; ``nu`` is read for Student-t noise only,
    ``x0`` (default all ones) only by SignSGD's lattice and phase predictions.
    """

    optimizer: str
    hessian: tuple[float, ...]
    lr: float
    sigma: float = 0.1
    batch_size: int = 1
    noise: str = "gaussian"
    nu: float = 3.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    x0: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        spec = get_optimizer(self.optimizer)
        object.__setattr__(self, "optimizer", spec.name)
        object.__setattr__(self, "hessian", tuple(float(h) for h in self.hessian))
        if not self.hessian or not all(math.isfinite(h) and h > 0 for h in self.hessian):
            raise PredictionError("--hessian: give positive curvatures like 1,3,10 (a convex quadratic)")
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise PredictionError(f"--sigma must be a positive number, got {self.sigma}")
        if int(self.batch_size) != self.batch_size or self.batch_size < 1:
            raise PredictionError(f"--batch-size must be a positive integer, got {self.batch_size}")
        if self.noise not in NOISES:
            raise PredictionError(f"--noise {self.noise!r}: choose gaussian or student-t")
        if self.noise == "student-t" and not (math.isfinite(self.nu) and self.nu > 0):
            raise PredictionError(f"--nu must be a positive number of degrees of freedom, got {self.nu}")
        if self.x0 is not None:
            object.__setattr__(self, "x0", tuple(float(v) for v in self.x0))
            if len(self.x0) != self.dim or not all(math.isfinite(v) for v in self.x0):
                raise PredictionError(
                    f"--x0 has {len(self.x0)} values; give {self.dim} finite numbers, one per coordinate"
                )
        spec.check(self.hp)

    @property
    def dim(self) -> int:
        return len(self.hessian)

    @property
    def hp(self) -> Hyperparameters:
        return Hyperparameters(
            lr=self.lr, beta1=self.beta1, beta2=self.beta2, eps=self.eps, weight_decay=self.weight_decay
        )

    @property
    def h(self) -> np.ndarray:
        return np.array(self.hessian)

    @property
    def scale(self) -> np.ndarray:
        """``s = σ/√B`` per coordinate: the noise's standard deviation, or its t-scale."""
        return np.full(self.dim, self.sigma / math.sqrt(self.batch_size))

    @property
    def variance_factor(self) -> float:
        """``Var Z / s²``: 1 for Gaussian noise, ``ν/(ν − 2)`` for Student-t, ∞ for ν ≤ 2."""
        if self.noise == "gaussian":
            return 1.0
        return self.nu / (self.nu - 2.0) if self.nu > 2 else math.inf

    @property
    def std(self) -> np.ndarray:
        """The noise's standard deviation per coordinate (∞ where it has no variance)."""
        return self.scale * math.sqrt(self.variance_factor)

    @property
    def start(self) -> np.ndarray:
        return np.ones(self.dim) if self.x0 is None else np.array(self.x0)

    @property
    def kappas(self) -> np.ndarray:
        """``κ_i = η h_i / s_i`` (docs/theory.md §3)."""
        return self.lr * self.h / self.scale

    @property
    def kappa(self) -> float:
        return float(self.kappas.max())

    @property
    def family(self) -> str:
        return get_optimizer(self.optimizer).capabilities.theory


@dataclass
class Prediction:
    """One number the theory gives for a setting, with its regime.

    ``value`` is the whole-problem number (the loss, ``E|x|²``, a time); ``per_coordinate``
    the coordinates' shares or values where that is meaningful; ``None`` where the quantity
    does not exist (the note says why).  ``simulated``, ``simulated_se`` and ``rel_error``
    are filled by a check against simulation (:mod:`optsde.theory.check`).
    """

    quantity: str
    formula: str
    value: float | None
    valid: bool
    regime: str
    recommended: bool = False
    per_coordinate: list[float] | None = None
    valid_per_coordinate: list[bool] | None = None
    note: str = ""
    simulated: float | None = None
    simulated_se: float | None = None
    rel_error: float | None = None
    simulated_per_coordinate: list[float] | None = field(default=None)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Shared pieces


def _stationary_pair(
    setting: Setting,
    formula: str,
    moments: np.ndarray | None,
    valid: np.ndarray,
    regime: str,
    recommended: bool,
    note: str = "",
) -> list[Prediction]:
    """The ``stationary_loss`` and ``stationary_second_moment`` records of one formula.

    ``moments`` are ``E x_i²`` per coordinate (NaN where the formula has no value); the
    loss is ``½ Σ h_i E x_i²`` with the coordinates' shares, the second moment ``E|x|²``.
    """
    h = setting.h
    if moments is None or not np.isfinite(moments).all():
        values: tuple[float | None, float | None] = (None, None)
        shares, per = None, None
        valid = np.zeros(setting.dim, dtype=bool)
    else:
        shares, per = (0.5 * h * moments).tolist(), moments.tolist()
        values = (float(np.sum(0.5 * h * moments)), float(np.sum(moments)))
    flags = [bool(v) for v in valid]
    return [
        Prediction(
            "stationary_loss", formula, values[0], all(flags), regime, recommended, shares, flags, note
        ),
        Prediction(
            "stationary_second_moment", formula, values[1], all(flags), regime, recommended, per, flags, note
        ),
    ]


def _per_coordinate(function: Callable[[int], float], dim: int) -> np.ndarray:
    """``function(i)`` for each coordinate, NaN where it refuses (an unstable linearisation)."""
    out = np.full(dim, np.nan)
    for i in range(dim):
        with contextlib.suppress(OptsdeError):
            out[i] = function(i)
    return out


def _agrees(values: np.ndarray, reference: np.ndarray, tolerance: float) -> np.ndarray:
    """Per coordinate: both finite and ``|values/reference − 1| ≤ tolerance``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.isfinite(values) & np.isfinite(reference) & (np.abs(values / reference - 1.0) <= tolerance)


def _kappa_text(setting: Setting) -> str:
    return f"κ = η·max h/s = {setting.kappa:.3g}"


# --------------------------------------------------------------------------------------------
# Regime wording, one voice for predict, simulate and the experiments


def regime_statement(family: str, kappa: float, *, noise: str = "gaussian", nu: float | None = None) -> str:
    """One sentence on which theory holds at this κ for an optimizer family (docs/theory.md §8).

    ``family`` is an optimizer name or its family (``sgd``, ``signsgd``, ``rmspropw``,
    ``adamw``); the wording is the one ``optsde predict`` prints, for ``simulate`` and the
    experiments to print beside their κ.
    """
    family = get_optimizer(family).capabilities.theory if family not in FAMILIES else family
    heavy = noise == "student-t" and nu is not None
    if family == "sgd":
        if heavy and nu <= 2:
            return (
                f"κ = {kappa:.3g}: Student-t noise with ν = {nu:g} ≤ 2 has no variance, so SGD's loss has no "
                "stationary mean and SGD has no SDE; report medians."
            )
        return (
            f"κ = {kappa:.3g}: SGD's stationary variance is exact for every ηh < 2 (the discrete AR(1) law); "
            "its SDE is within 5% while ηh ≤ 0.1 (relative error ηh/2)."
        )
    if family == "signsgd":
        if kappa < 0.07:
            where = "its SDE and phase-3 laws hold (κ ≲ 0.07 for 5%)"
        elif kappa < 2:
            where = (
                "its SDE's stationary laws fall below the optimizer's (by 4% at κ = 0.1, 33% at κ = 1); "
                "the exact lattice law holds"
            )
        else:
            where = (
                "the iterates live on the lattice x₀ + ηℤ in short periodic orbits, the loss depends on "
                "x₀ mod η and no SDE or smooth formula applies; "
                "the exact lattice law and the lattice floor hold"
            )
        return f"κ = {kappa:.3g}: for SignSGD {where}."
    if family in ("rmspropw", "adamw"):
        if heavy and nu <= 2:
            return (
                f"κ = {kappa:.3g}: Student-t noise with ν = {nu:g} ≤ 2 has no variance; "
                "v does not settle and "
                "no stationary formula applies."
            )
        name = "RMSprop(W)" if family == "rmspropw" else "Adam(W)"
        if kappa < 0.1:
            where = (
                "the formulas with p = s + ε hold where the momentum is fast against the decay "
                "(ηθ ≪ 1 − β₁), the self-consistent discrete law everywhere"
            )
        else:
            where = (
                "v settles at s² + h²E x², not s²: only the discrete law with the self-consistent "
                "preconditioner holds (within 2% up to κ = 10)"
            )
        return f"κ = {kappa:.3g}: for {name} {where}."
    raise PredictionError(f"no regime statement for {family!r}; choose one of: {', '.join(sorted(FAMILIES))}")


# --------------------------------------------------------------------------------------------
# SGD


def _sgd(setting: Setting) -> list[Prediction]:
    h, lr = setting.h, setting.lr
    out: list[Prediction] = []
    if setting.noise == "student-t" and setting.nu <= 2:
        note = (
            f"Student-t noise with ν = {setting.nu:g} ≤ 2 has infinite variance, so E f = ∞ at every step: "
            "the sample mean of a simulation does not converge. Use the median."
        )
        for quantity in ("stationary_loss", "stationary_second_moment"):
            out.append(Prediction(quantity, "no stationary mean", None, True, "ν ≤ 2", True, note=note))
        out.extend(_sgd_median(setting))
        out.append(_exponent(setting, 2))
        return out
    if np.any(lr * h >= 2):
        raise PredictionError(f"SGD diverges for ηh ≥ 2 (here max ηh = {lr * h.max():.3g}); reduce --lr")
    std = setting.std
    exact = sgd.sgd_discrete_stationary_second_moment(h, std, lr)
    everywhere = np.ones(setting.dim, dtype=bool)
    out += _stationary_pair(
        setting,
        "discrete, exact: η s²/(h(2 − ηh))",
        exact,
        everywhere,
        "exact for every 0 < ηh < 2 (any noise with a variance)",
        True,
    )
    sde = sgd.sgd_stationary_second_moment(h, std, lr)
    out += _stationary_pair(
        setting,
        "SDE (Li et al.): η s²/(2h)",
        sde,
        _agrees(sde, exact, FORMULA_TOLERANCE),
        "ηh ≤ 0.1 (relative error ηh/2)",
        False,
    )
    mu, L = float(h.min()), float(h.max())
    bound = lr * L * setting.dim * float(std[0]) ** 2 / (4.0 * mu)
    exact_loss = float(np.sum(0.5 * h * exact))
    out.append(
        Prediction(
            "stationary_loss_bound",
            "ηLdσ²/(4μB), SDE bound (μ = min h, L = max h)",
            bound,
            bound >= exact_loss,
            "an upper bound on the SDE's loss; bounds the optimizer's while L/μ ≥ 2/(2 − ηh)",
            True,
        )
    )
    out.append(_exponent(setting, 2))
    if setting.noise == "student-t":
        out.append(
            Prediction(
                "heavy_tail_factor",
                "ν/(ν − 2): loss against Gaussian noise of the same scale",
                setting.variance_factor,
                True,
                "any ηh < 2 (the loss is proportional to the noise variance)",
                True,
            )
        )
    return out


def _sgd_median(setting: Setting) -> list[Prediction]:
    """Medians of ``x_i²`` and of the loss under Cauchy noise; none is known for 1 < ν ≤ 2."""
    if setting.nu != 1:
        return [
            Prediction(
                "median_loss",
                "none known",
                None,
                False,
                "ν = 1 (Cauchy) only",
                True,
                note="the stationary law is a weighted sum of Student-t variables, "
                "with no closed-form median",
            )
        ]
    scale = sgd.sgd_cauchy_stationary_scale(setting.h, setting.scale, setting.lr)
    # The loss is a sum of independent ½h_i c_i² C_i², C_i standard Cauchy; its median has no closed
    # form beyond d = 1, so it is taken from 2·10⁶ draws of the exact law with a fixed seed
    # (relative error ≈ 0.2%).
    draws = np.random.default_rng(0).standard_cauchy((2_000_000, setting.dim))
    median = float(np.median(np.sum(0.5 * setting.h * (scale * draws) ** 2, axis=1)))
    regime = "Cauchy noise, every ηh < 2 (exact stationary law: Cauchy with scale ηs/(1 − |1 − ηh|))"
    return [
        Prediction(
            "median_second_moment",
            "median x_i² = (ηs/(1 − |1 − ηh|))², s/h for ηh ≤ 1",
            float(np.sum(scale**2)),
            True,
            regime,
            True,
            per_coordinate=(scale**2).tolist(),
            note="value: the sum of the coordinates' medians",
        ),
        Prediction(
            "median_loss", "median of ½ Σ h_i x_i² under the exact Cauchy law", median, True, regime, True
        ),
    ]


def _exponent(setting: Setting, exponent: int) -> Prediction:
    return Prediction(
        "noise_scaling_exponent",
        f"E f ∝ σ^{exponent} at fixed η",
        float(exponent),
        True,
        "the SDE regime (κ ≲ 0.1) as σ grows; SGD's is exact for every σ",
        True,
    )


# --------------------------------------------------------------------------------------------
# SignSGD


def _signsgd(setting: Setting) -> list[Prediction]:
    h, s, lr, x0 = setting.h, setting.scale, setting.lr, setting.start
    noise, nu = setting.noise, (setting.nu if setting.noise == "student-t" else None)
    slope = signsgd.sign_slope(noise, nu)
    exact = signsgd.signsgd_lattice_stationary_second_moment(h, s, lr, x0, noise=noise, nu=nu)
    lattice_regime = (
        "exact for every κ: each coordinate is a birth–death chain on x₀ + ηℤ; "
        "for κ ≳ 2 its mass sits on the "
        "sites nearest 0 and the loss depends on x₀ mod η"
    )
    out = _stationary_pair(
        setting, "lattice chain, exact", exact, np.ones(setting.dim, bool), lattice_regime, True
    )
    slope_text = "√(2/π)" if noise == "gaussian" else f"2f_ν(0) = {slope:.4g}"
    formulas = {
        "SDE stationary law (quadrature)": signsgd.signsgd_sde_stationary_second_moment(
            h, s, lr, noise=noise, nu=nu
        ),
        f"phase-3 SDE: η/(2a + ηc²(h/s)²), c = {slope_text}": signsgd.signsgd_phase3_stationary_second_moment(
            h, s, lr, slope=slope
        ),
        f"small-κ limit: ηs/(2ch), c = {slope_text}": lr * s / (2.0 * slope * h),
    }
    for formula, moments in formulas.items():
        valid = _agrees(moments, exact, FORMULA_TOLERANCE)
        out += _stationary_pair(
            setting, formula, moments, valid, _signsgd_regime(moments, exact, setting), False
        )
    floor = signsgd.signsgd_lattice_loss_floor(h, lr, x0)
    out.append(
        Prediction(
            "lattice_loss_floor",
            "½ Σ h_i r_i², r = x₀ mod η nearest 0",
            floor,
            True,
            "every step, every κ: no iterate lies closer to 0 than the lattice allows",
            True,
        )
    )
    exact_loss = float(np.sum(0.5 * h * exact))
    mu, L = float(h.min()), float(h.max())
    bound = signsgd.signsgd_phase3_loss_limit(
        mu, L, setting.dim, setting.sigma, setting.batch_size, lr, slope=slope
    )
    out.append(
        Prediction(
            "stationary_loss_bound",
            f"phase-3 bound ηLd s/(4μc), c = {slope_text}",
            bound,
            bound >= exact_loss,
            "valid where it bounds the exact lattice law (the phase-3 regime, κ ≲ 0.1)",
            True,
        )
    )
    out.append(
        Prediction(
            "phase1_sqrt_loss_rate",
            "√f(X_t) ≤ √f₀ − √(μ/2)·t (phase-1 ODE)",
            math.sqrt(mu / 2.0),
            bool(noise == "gaussian"),
            "while every coordinate has |∇f/s| > 3/2, Gaussian noise (Lemma 3.4)",
            True,
        )
    )
    if noise == "gaussian":
        out += _phase_times(setting)
    out.append(
        Prediction(
            "noise_scaling_exponent",
            "E f ∝ σ¹ at fixed η",
            1.0,
            bool(_agrees(formulas[next(iter(formulas))], exact, FORMULA_TOLERANCE).all()),
            "the SDE regime; on the lattice (κ ≳ 2) the loss is set by η and x₀ mod η, not σ",
            True,
        )
    )
    if noise == "student-t":
        out.append(
            Prediction(
                "heavy_tail_factor",
                "√(2/π)/(2f_ν(0)): loss against Gaussian noise of the same scale",
                signsgd.SQRT_2_OVER_PI / slope,
                bool(setting.kappa < 0.07),
                "the phase-3 regime (κ ≲ 0.07); bounded for every ν, also ν ≤ 2",
                True,
            )
        )
    return out


def _signsgd_regime(moments: np.ndarray, exact: np.ndarray, setting: Setting) -> str:
    with np.errstate(invalid="ignore", divide="ignore"):
        worst = float(np.nanmax(np.abs(moments / exact - 1.0)))
    return (
        f"small κ (within 5% of the exact lattice law; "
        f"here off by {100 * worst:.1f}% at {_kappa_text(setting)})"
    )


def _phase_times(setting: Setting) -> list[Prediction]:
    """Lemma 3.4's phase boundaries and the SDE times to reach them from ``x0`` (Gaussian noise)."""
    h, s, x0 = setting.h, setting.scale, np.abs(setting.start)
    thresholds = PhaseThresholds()
    slope, q_low, q_high = phase2_drift_bounds(thresholds)
    edge2, edge3 = thresholds.high * s / h, thresholds.low * s / h
    regime = "Gaussian noise, the SDE regime (κ ≲ 0.07); SDE time t = kη"
    valid = bool(setting.kappa < 0.07)
    out = [
        Prediction(
            "phase2_boundary",
            "|x_i| = (3/2) s/h_i (|∇f/s| = 3/2); value: f there",
            float(np.sum(0.5 * h * edge2**2)),
            True,
            "Lemma 3.4's threshold",
            True,
            per_coordinate=edge2.tolist(),
        ),
        Prediction(
            "phase3_boundary",
            "|x_i| = s/h_i (|∇f/s| = 1); value: f there",
            float(np.sum(0.5 * h * edge3**2)),
            True,
            "Lemma 3.4's threshold",
            True,
            per_coordinate=edge3.tolist(),
        ),
    ]
    to_phase2 = np.clip(x0 - edge2, 0.0, None)  # the phase-1 ODE moves |x| at unit speed
    out.append(
        Prediction(
            "time_to_phase2",
            "phase-1 ODE: t = |x₀| − (3/2)s/h",
            float(to_phase2.max()),
            valid,
            regime,
            True,
            per_coordinate=to_phase2.tolist(),
        )
    )
    entry = np.minimum(x0, edge2)
    r = slope * h / s
    for q, recommended, edge in ((q_high, False, "earliest"), (q_low, True, "latest")):
        # Phase-2 bracket: |E X| = (|x_e| + q/r)e^{−rt} − q/r reaches s/h at this time.
        inside = np.log((entry + q / r) / (edge3 + q / r)) / r
        total = to_phase2 + np.clip(inside, 0.0, None)
        out.append(
            Prediction(
                "time_to_phase3",
                f"phase-1 ODE + phase-2 bracket, {edge}",
                float(total.max()),
                valid,
                regime,
                recommended,
                per_coordinate=total.tolist(),
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# RMSprop(W) and Adam(W)


def _adaptive_reference_accuracy(setting: Setting) -> float | None:
    """The self-consistent discrete law's measured accuracy under this noise and β₂ (docs/theory.md §8).

    Within 2% for Gaussian or Student-t ν > 4 noise with ``β₂ ≥ 0.99``; within 3% for 2 < ν ≤ 4
    at ``β₂ ≥ 0.999`` (``v`` of heavy-tailed noise fluctuates: 9% off at ν = 3, β₂ = 0.99);
    otherwise not claimed.
    """
    light = setting.noise == "gaussian" or setting.nu > 4
    if light and setting.beta2 >= 0.99:
        return 0.02
    if not light and setting.nu > 2 and setting.beta2 >= 0.999:
        return 0.03
    return None


def _adaptive(setting: Setting) -> list[Prediction]:
    h, lr, hp, theta = setting.h, setting.lr, setting.hp, setting.weight_decay
    adamw = setting.family == "adamw"
    if setting.noise == "student-t" and setting.nu <= 2:
        note = f"Student-t noise with ν = {setting.nu:g} ≤ 2 has no variance: v never settles"
        out = [
            Prediction(q, "none", None, False, "noise with a variance", True, note=note)
            for q in ("stationary_loss", "stationary_second_moment")
        ]
        return [*out, _exponent_adaptive(setting)]
    s = setting.std
    accuracy = _adaptive_reference_accuracy(setting)
    if adamw:
        reference = _per_coordinate(
            lambda i: float(adaptive.adamw_stationary_second_moment_self_consistent(h[i], s[i], hp)),
            setting.dim,
        )
    else:
        reference = _per_coordinate(
            lambda i: float(adaptive.rmspropw_stationary_second_moment_self_consistent(h[i], s[i], hp)),
            setting.dim,
        )
    ref_valid = np.isfinite(reference) & (accuracy is not None)
    assumptions = "Gaussian or Student-t ν > 4 noise and β₂ ≥ 0.99 (2%); 2 < ν ≤ 4 needs β₂ ≥ 0.999 (3%)"
    out = _stationary_pair(
        setting,
        "discrete Lyapunov, self-consistent p = √(s² + h²E x²) + ε",
        reference,
        ref_valid,
        f"every κ up to 10 measured, every β₁, θ, ε; {assumptions}",
        True,
    )
    tolerance = FORMULA_TOLERANCE - (accuracy or FORMULA_TOLERANCE)
    frozen = "p = s + ε"

    def others() -> dict[str, np.ndarray]:
        formulas = {
            f"SDE-style: η s²/(2p(h + θp)), {frozen}": _per_coordinate(
                lambda i: float(adaptive.adaptive_stationary_second_moment(h[i], s[i], lr, hp.eps, theta)),
                setting.dim,
            ),
        }
        if adamw:
            for model in ("paper", "refined"):
                formulas[f"{model} SDE, continuous Lyapunov, self-consistent p"] = _per_coordinate(
                    lambda i, m=model: float(
                        adaptive.adamw_stationary_second_moment_sde_self_consistent(h[i], s[i], hp, m)
                    ),
                    setting.dim,
                )
            formulas[f"Malladi et al. SDE, continuous Lyapunov, {frozen}"] = _per_coordinate(
                lambda i: float(adaptive.adamw_stationary_second_moment_sde(h[i], s[i], hp, "malladi")),
                setting.dim,
            )
            formulas[f"discrete Lyapunov, {frozen}"] = _per_coordinate(
                lambda i: float(adaptive.adamw_stationary_second_moment_discrete(h[i], s[i], hp)), setting.dim
            )
        else:
            formulas["paper SDE, self-consistent p"] = _per_coordinate(
                lambda i: float(
                    adaptive.adaptive_stationary_second_moment_self_consistent(h[i], s[i], lr, hp.eps, theta)
                ),
                setting.dim,
            )
            formulas[f"discrete AR(1), {frozen}"] = _per_coordinate(
                lambda i: float(adaptive.rmspropw_stationary_second_moment_discrete(h[i], s[i], hp)),
                setting.dim,
            )
        return formulas

    for formula, moments in others().items():
        valid = _agrees(moments, reference, tolerance) & ref_valid
        regime = (
            f"where it agrees with the self-consistent law within {100 * tolerance:.0f}% "
            f"(typically κ ≲ 0.1 without momentum or decay; see docs/theory.md §8)"
        )
        out += _stationary_pair(setting, formula, moments, valid, regime, False)
    out += _adaptive_bounds(setting, reference, ref_valid)
    out.append(_exponent_adaptive(setting))
    if setting.noise == "student-t":
        out.append(
            Prediction(
                "heavy_tail_factor",
                "√(ν/(ν − 2)): loss against Gaussian noise of the same scale",
                math.sqrt(setting.variance_factor),
                bool(setting.kappa < 0.1 and accuracy is not None),
                "small κ, where E f ≈ Σ η s/4 is linear in the noise's standard deviation",
                True,
            )
        )
    return out


def _adaptive_bounds(setting: Setting, reference: np.ndarray, ref_valid: np.ndarray) -> list[Prediction]:
    """The paper's eq. (6) and its σ → ∞ limit (AdamW and RMSpropW alike, paper-style)."""
    h, lr, theta, d = setting.h, setting.lr, setting.weight_decay, setting.dim
    mu, L = float(h.min()), float(h.max())
    sigma = setting.sigma * math.sqrt(setting.variance_factor)
    bound = adaptive.adamw_loss_limit(mu, L, d, sigma, setting.batch_size, lr, theta)
    ref_loss = float(np.sum(0.5 * h * reference)) if ref_valid.all() else math.nan
    out = [
        Prediction(
            "stationary_loss_bound",
            "paper eq. (6): ηLd/(4μ)·σ/(√B + σθ(L+μ)/(2μL))",
            bound,
            bool(bound >= ref_loss),
            "ε = 0, fast momentum, κ ≲ 0.1; valid where it bounds the self-consistent law",
            True,
        )
    ]
    if theta > 0:
        out.append(
            Prediction(
                "loss_limit_sigma_to_infinity",
                "ηLd/(4μ)·2μL/(θ(L+μ)): eq. (6) as σ → ∞",
                lr * L * d / (4.0 * mu) * 2.0 * mu * L / (theta * (L + mu)),
                True,
                "θ > 0: the loss stays bounded however large the noise",
                True,
            )
        )
    return out


def _exponent_adaptive(setting: Setting) -> Prediction:
    exponent = sgd.noise_resilience_exponent(setting.optimizer, setting.weight_decay)
    return Prediction(
        "noise_scaling_exponent",
        f"E f ∝ σ^{exponent} at fixed η as σ → ∞",
        float(exponent),
        True,
        "fixed η, large σ (θ > 0 bounds AdamW/RMSpropW)",
        True,
    )


# --------------------------------------------------------------------------------------------
# The registry

FAMILIES: dict[str, Callable[[Setting], list[Prediction]]] = {
    "sgd": _sgd,
    "signsgd": _signsgd,
    "rmspropw": _adaptive,
    "adamw": _adaptive,
}
"""Theory family (each optimizer declares its own, ``spec.capabilities.theory``) ↦ its predictions.
RMSprop and Adam are their families with θ = 0."""


def predictions(setting: Setting) -> list[Prediction]:
    """Every prediction for ``setting``, exactly one recommended per quantity (docs/theory.md §8)."""
    records = FAMILIES[setting.family](setting)
    for quantity in {p.quantity for p in records}:
        chosen = [p for p in records if p.quantity == quantity and p.recommended]
        assert len(chosen) == 1, f"{quantity}: {len(chosen)} recommended formulas"
    return records


def recommended(records: list[Prediction], quantity: str) -> Prediction:
    """The recommended record for ``quantity``."""
    return next(p for p in records if p.quantity == quantity and p.recommended)
