"""The gradient noise scale ``B_simple`` and κ, at a point and along a training run (docs/theory.md §9).

McCandlish et al. (2018)'s simple noise scale is ``B_simple = tr(C) / |∇f|²``, with ``C`` the
per-example gradient covariance and ``∇f`` the mean gradient over the examples: at batch size
``B`` the minibatch gradient's noise ``tr(C)/B`` equals the signal ``|∇f|²`` where ``B = B_simple``.
Batches well below it are noise-dominated, the regime in which the SDEs and their square-root
scaling rules (docs/theory.md §6) were derived.

Both ``tr(C)`` and ``|∇f|²`` are computed exactly over the examples given (``C`` divided by
``n``, the covariance of the finite population of examples, as in docs/theory.md §4), from one
pass over per-example gradients (:class:`~optsde.problems.network.NetworkProblem`'s exact
``diag C``), so ``B_simple`` here has no estimation noise of its own.

κ (docs/theory.md §3) is reported as the median, 99th percentile and maximum over coordinates
of ``η |h_i| / s_i`` (:meth:`~optsde.problems.network.NetworkProblem.kappa_profile`; ``h`` is
Hutchinson's estimate of the Hessian diagonal, so κ is an estimate).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from optsde.errors import OptsdeError
from optsde.optimizers import Hyperparameters, State, get_optimizer
from optsde.problems.datasets import Dataset
from optsde.problems.network import LossFn, NetworkProblem
from optsde.sde import DiscreteRunner, simulate


class NoiseScaleError(OptsdeError):
    """The noise scale cannot be computed as asked; the message says what to change."""


@dataclass(frozen=True)
class NoiseScale:
    """``B_simple = trace / grad_norm_sq`` over ``examples`` examples (docs/theory.md §9)."""

    b_simple: float
    trace: float
    """``tr C``, the per-example gradient covariance's trace (divided by ``examples``)."""
    grad_norm_sq: float
    """``|∇f|²``, the squared norm of the mean gradient."""
    examples: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def problem_noise_scale(problem: NetworkProblem, x: Tensor) -> NoiseScale:
    """``B_simple`` of ``problem``'s estimation set at the parameters ``x`` ``(d,)``.

    ``B_simple`` is infinite where the mean gradient vanishes (a stationary point), 0 where
    every example has the same gradient.
    """
    point = x.reshape(1, -1)
    gradient, variance = problem.example_statistics(point)
    trace = float(variance.double().sum())
    norm_sq = float((gradient.double() ** 2).sum())
    b_simple = trace / norm_sq if norm_sq > 0 else math.inf
    return NoiseScale(b_simple, trace, norm_sq, int(problem.estimation_size))  # type: ignore[arg-type]


def gradient_noise_scale(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Tensor,
    targets: Tensor,
    *,
    chunk_size: int | None = None,
) -> NoiseScale:
    """``B_simple`` of any ``nn.Module`` at its current parameters, over the examples given.

    ``loss_fn(outputs, targets)`` must return per-example losses ``(batch,)`` (e.g.
    ``F.cross_entropy(..., reduction="none")``); every parameter of ``model`` counts as a
    coordinate.  The model must compute each example's output from that example alone (no
    BatchNorm in training mode).  ``chunk_size`` bounds the examples per forward pass.
    ``model`` itself is left untouched (a copy is evaluated).
    """
    if inputs.shape[0] != targets.shape[0] or inputs.shape[0] < 1:
        raise NoiseScaleError(
            f"need at least one example and as many targets as inputs, got {inputs.shape[0]} inputs "
            f"and {targets.shape[0]} targets"
        )
    parameters = list(model.parameters())
    if not parameters:
        raise NoiseScaleError(f"{type(model).__name__} has no parameters")
    x = torch.cat([p.detach().reshape(-1) for p in parameters])
    data = Dataset("examples", inputs.detach(), targets.detach(), num_classes=0)
    problem = NetworkProblem(
        model=copy.deepcopy(model),
        data=data,
        batch_size=1,
        loss_fn=loss_fn,
        sampling="with-replacement",
        chunk_size=chunk_size,
    )
    return problem_noise_scale(problem, x.to(inputs.device))


def regime_warning(batch_size: float, b_simple: float, where: str = "") -> str | None:
    """One line when ``batch_size`` is at or past ``B_simple`` (docs/theory.md §9), else None;
    ``where`` (e.g. ``" at step 100"``) says where ``B_simple`` was measured.

    There the minibatch noise ``tr(C)/B`` no longer dominates the signal ``|∇f|²``, so the
    scaling rules, derived where it does, cannot be expected to hold.
    """
    if batch_size < b_simple:
        return None
    return (
        f"warning: batch size {batch_size:g} is at or past the gradient noise scale "
        f"B_simple = {b_simple:.3g}{where}; the scaling rules were derived for batches well below it "
        "(noise-dominated steps, docs/theory.md §9) and may not hold there"
    )


def noise_scale_run(
    problem: NetworkProblem,
    optimizer: str,
    hp: Hyperparameters,
    steps: int,
    every: int,
    *,
    seed: int = 0,
    kappa_samples: int = 16,
) -> list[dict[str, Any]]:
    """``B_simple`` and κ at step 0 and every ``every`` steps of one run of ``optimizer`` (real
    minibatches of ``problem.batch_size``) from ``problem.x0(seed)``, through step ``steps``.

    One record per point: step, loss, ``B_simple`` with its parts, ``B / B_simple``, and κ's
    median, 99th percentile and maximum at the run's learning rate.
    """
    if steps < 0 or every < 1:
        raise NoiseScaleError(f"steps must be ≥ 0 and every ≥ 1, got steps={steps}, every={every}")
    columns = ("loss", "b_simple", "trace", "grad_norm_sq", "kappa_median", "kappa_q99", "kappa_max")

    def statistics(state: State, oracle: NetworkProblem) -> Tensor:
        """Every column at each path's parameters: one row per path."""
        rows = []
        for x in state.x:
            scale = problem_noise_scale(oracle, x)
            kappa = oracle.kappa_profile(hp.lr, x, samples=kappa_samples)
            loss = float(oracle.loss(x[None])[0])
            rows.append(
                [
                    loss,
                    scale.b_simple,
                    scale.trace,
                    scale.grad_norm_sq,
                    *(kappa[q] for q in ("median", "q99", "max")),
                ]
            )
        return torch.tensor(rows, dtype=torch.float64)

    x0 = problem.x0(seed)
    if steps == 0:
        steps_seen, values = [0], statistics(State(x=x0[None]), problem)[None].numpy()
    else:
        rec = simulate(
            DiscreteRunner(get_optimizer(optimizer).discrete),
            problem,
            hp,
            x0,
            paths=1,
            steps=steps,
            record_at=sorted({*range(0, steps + 1, every), steps}),
            observables={"statistics": statistics},
            generator=torch.Generator().manual_seed(seed),
        )
        if rec.divergence is not None:
            raise NoiseScaleError(f"the run diverged by step {rec.divergence.step}; lower --lr")
        steps_seen, values = rec.steps.tolist(), rec.values["statistics"]
    examples = problem_noise_scale(problem, x0).examples
    records = []
    for k, row in zip(steps_seen, values[:, 0, :], strict=True):
        record = {"step": int(k), **dict(zip(columns, map(float, row), strict=True))}
        record["examples"] = examples
        record["batch_over_b_simple"] = problem.batch_size / record["b_simple"]
        records.append(record)
    return records


def format_run(records: list[dict[str, Any]], batch_size: int) -> str:
    """A plain-text table of :func:`noise_scale_run`'s records."""
    header = (
        f"{'step':>6} {'loss':>9} {'B_simple':>10} {'B/B_simple':>10} "
        f"{'κ median':>10} {'κ q99':>10} {'κ max':>10}"
    )
    lines = [header, "-" * len(header)]
    for r in records:
        lines.append(
            f"{r['step']:>6} {r['loss']:>9.4f} {r['b_simple']:>10.4g} {r['batch_over_b_simple']:>10.3g} "
            f"{r['kappa_median']:>10.3g} {r['kappa_q99']:>10.3g} {r['kappa_max']:>10.3g}"
        )
    lines.append(
        f"batch size {batch_size}; B_simple = tr(C)/|∇f|² over {records[0]['examples']} examples "
        "(exact); κ = η|h|/s, h by Hutchinson (docs/theory.md §3, §9)"
    )
    return "\n".join(lines)
