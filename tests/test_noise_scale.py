"""The gradient noise scale ``B_simple = tr(C)/|∇f|²`` (docs/theory.md §9): against brute force
per-example gradients on small networks, against the closed form of a linear regression, and
through ``optsde noise-scale`` and ``optsde scale --noise-scale``."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from optsde.cli import main
from optsde.noise_scale import (
    NoiseScaleError,
    gradient_noise_scale,
    noise_scale_run,
    problem_noise_scale,
    regime_warning,
)
from optsde.optimizers import Hyperparameters
from optsde.problems.charlm import VOCAB_SIZE, TinyGPT
from optsde.problems.datasets import breast_cancer, digits
from optsde.problems.models import build_model
from optsde.problems.network import network_problem

DTYPE = torch.float64


def cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, targets, reduction="none")


def brute_noise_scale(model: nn.Module, loss_fn, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """``tr(C)/|∇f|²`` from ``∇ℓ_n`` taken one example at a time in a Python loop."""
    rows = []
    for i in range(len(targets)):
        loss = loss_fn(model(inputs[i : i + 1]), targets[i : i + 1]).sum()
        grads = torch.autograd.grad(loss, list(model.parameters()))
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    per_example = torch.stack(rows)
    mean = per_example.mean(dim=0)
    return float(per_example.var(dim=0, unbiased=False).sum() / (mean**2).sum())


@pytest.mark.parametrize("arch", ["mlp", "cnn", "transformer", "resnet"])
def test_b_simple_matches_brute_force_per_example_gradients(arch):
    data = breast_cancer(train_size=16) if arch == "mlp" else digits(train_size=16)
    model = build_model(arch, data.input_shape, data.num_classes, width=4 if arch != "transformer" else 8)
    model = model.to(DTYPE)
    inputs = data.inputs.to(DTYPE)
    before = [p.detach().clone() for p in model.parameters()]
    measured = gradient_noise_scale(model, cross_entropy, inputs, data.targets, chunk_size=5)
    expected = brute_noise_scale(model, cross_entropy, inputs, data.targets)
    assert measured.b_simple == pytest.approx(expected, rel=1e-9)
    assert measured.b_simple == pytest.approx(measured.trace / measured.grad_norm_sq, rel=1e-12)
    assert measured.examples == 16
    # The user's model is left as it was.
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_b_simple_of_a_character_model_matches_brute_force():
    """Token inputs (integers) and a per-window loss, as in the scaling-rule LM experiment."""
    torch.manual_seed(0)
    model = TinyGPT(context=6, width=8, layers=1, heads=2).to(DTYPE)
    windows = torch.randint(0, VOCAB_SIZE, (10, 7))

    def window_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.transpose(1, 2), targets, reduction="none").mean(dim=1)

    measured = gradient_noise_scale(model, window_loss, windows[:, :-1], windows[:, 1:])
    expected = brute_noise_scale(model, window_loss, windows[:, :-1], windows[:, 1:])
    assert measured.b_simple == pytest.approx(expected, rel=1e-9)


def test_b_simple_of_a_linear_regression_matches_its_closed_form():
    r"""Least squares ``ℓ_n = ½(wᵀa_n − y_n)²`` with ``a ~ N(0, I_p)``, ``y = w*ᵀa + ε``,
    ``ε ~ N(0, σ²)`` independent of ``a``.  With ``u = w − w*`` the residual is
    ``r = uᵀa − ε`` and ``∇ℓ = r a``, so

    - ``∇f = E[r a] = E[a aᵀ] u = u``;
    - ``E[∇ℓ ∇ℓᵀ] = E[(uᵀa)² a aᵀ] + σ² E[a aᵀ] = (|u|² I + 2 u uᵀ) + σ² I`` (Isserlis:
      ``E[a_i a_j a_k a_l] = δ_ij δ_kl + δ_ik δ_jl + δ_il δ_jk``; the cross term vanishes
      since ``E ε = 0``);
    - ``C = E[∇ℓ ∇ℓᵀ] − ∇f ∇fᵀ = (|u|² + σ²) I + u uᵀ``, ``tr C = p(|u|² + σ²) + |u|²``;

    hence ``B_simple = tr C / |u|² = p + 1 + p σ²/|u|²``.

    The measured value is over ``n`` sampled examples, so it is compared with a tolerance of
    four standard errors, the standard error from the estimator's influence function
    ``ψ_n = [(q_n − q̄) − 2ḡ·(g_n − ḡ)]/G − 2T ḡ·(g_n − ḡ)/G²`` (``q = |g|²``, ``T = tr Ĉ``,
    ``G = |ḡ|²``), evaluated on the same sample; its bias, ``O(1/n)``, is far below that.
    """
    p, n, sigma = 4, 20_000, 0.5
    gen = torch.Generator().manual_seed(3)
    w_star = torch.randn(p, generator=gen, dtype=DTYPE)
    u = torch.tensor([0.6, -0.3, 0.2, 0.5], dtype=DTYPE)
    inputs = torch.randn(n, p, generator=gen, dtype=DTYPE)
    targets = inputs @ w_star + sigma * torch.randn(n, generator=gen, dtype=DTYPE)
    model = nn.Linear(p, 1, bias=False).to(DTYPE)
    with torch.no_grad():
        model.weight.copy_(w_star + u)

    def half_squared_error(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 0.5 * (outputs[:, 0] - y) ** 2

    measured = gradient_noise_scale(model, half_squared_error, inputs, targets)
    closed_form = p + 1 + p * sigma**2 / float(u @ u)

    g = (inputs @ (w_star + u) - targets)[:, None] * inputs  # ∇ℓ_n = r_n a_n
    mean = g.mean(dim=0)
    q = (g**2).sum(dim=1)
    total, norm_sq = float(q.mean() - mean @ mean), float(mean @ mean)
    centred = (g - mean) @ mean
    influence = ((q - q.mean()) - 2 * centred) / norm_sq - 2 * total * centred / norm_sq**2
    stderr = float(influence.std()) / math.sqrt(n)
    assert measured.b_simple == pytest.approx(total / norm_sq, rel=1e-9)
    assert abs(measured.b_simple - closed_form) < 4 * stderr, (measured.b_simple, closed_form, stderr)
    assert stderr < 0.05 * closed_form  # the check has power: the tolerance is a few percent


def test_regime_warning_only_at_or_past_b_simple():
    assert regime_warning(100, 101.0) is None
    line = regime_warning(128, 100.0)
    assert line is not None and "B_simple = 100" in line and "\n" not in line
    assert regime_warning(1, math.inf) is None


def test_run_records_b_simple_and_kappa_at_the_promised_steps():
    problem = network_problem("mlp", "breast-cancer", train_size=64, batch_size=8, width=4)
    records = noise_scale_run(problem, "adamw", Hyperparameters(lr=1e-2), steps=5, every=2, kappa_samples=2)
    assert [r["step"] for r in records] == [0, 2, 4, 5]
    start = problem_noise_scale(problem, problem.x0())
    assert records[0]["b_simple"] == pytest.approx(start.b_simple, rel=1e-6)
    assert records[0]["loss"] == pytest.approx(float(problem.loss(problem.x0()[None])[0]))
    for r in records:
        assert r["batch_over_b_simple"] == pytest.approx(8 / r["b_simple"])
        assert 0 <= r["kappa_median"] <= r["kappa_q99"] <= r["kappa_max"]
    # The run moves: later points are not the start.
    assert records[-1]["loss"] != records[0]["loss"]
    with pytest.raises(NoiseScaleError, match="every"):
        noise_scale_run(problem, "adamw", Hyperparameters(lr=1e-2), steps=5, every=0)


def test_cli_noise_scale_prints_and_writes(tmp_path, capsys):
    out = tmp_path / "scale.json"
    args = ["noise-scale", "--model", "mlp", "--dataset", "breast-cancer", "--train-size", "64"]
    args += ["--width", "4", "--batch-size", "8", "--steps", "2", "--every", "1", "--kappa-samples", "2"]
    assert main([*args, "--json", str(out)]) == 0
    records = json.loads(out.read_text())
    assert [r["step"] for r in records] == [0, 1, 2]
    printed = capsys.readouterr().out
    assert "B_simple" in printed and "κ q99" in printed
    lowest = min(r["b_simple"] for r in records)
    assert (lowest <= 8) == ("warning: batch size 8" in printed)


def test_cli_scale_warns_in_one_line_past_the_noise_scale(capsys):
    base = ["scale", "--optimizer", "signsgd", "--from-batch", "32", "--lr", "1e-3"]
    assert main([*base, "--to-batch", "64", "--noise-scale", "300"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main([*base, "--to-batch", "512", "--noise-scale", "300"]) == 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("warning: batch size 512") and "\n" not in err


def test_cli_scale_measures_the_noise_scale_of_a_built_in_network(capsys):
    problem = network_problem("mlp", "breast-cancer", train_size=64, width=4, sampling="with-replacement")
    b_simple = problem_noise_scale(problem, problem.x0()).b_simple
    net = ["--model", "mlp", "--dataset", "breast-cancer", "--train-size", "64", "--width", "4"]
    base = ["scale", "--optimizer", "adamw", "--from-batch", "2", "--lr", "1e-3", *net]
    below, above = max(1, math.floor(b_simple / 2)), math.ceil(b_simple) + 1
    assert main([*base, "--to-batch", str(below)]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main([*base, "--to-batch", str(above)]) == 0
    assert f"B_simple = {b_simple:.3g}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--noise-scale", "10", "--model", "mlp", "--dataset", "digits"], "not both"),
        (["--model", "mlp"], "needs both --model and --dataset"),
        (["--noise-scale", "0"], "--noise-scale"),
        (["--width", "4"], "--width and --train-size describe"),
    ],
)
def test_cli_scale_refuses_bad_regime_flags_with_one_line(flags, message, capsys):
    args = ["scale", "--optimizer", "adamw", "--from-batch", "32", "--to-batch", "64", "--lr", "1e-3"]
    assert main([*args, *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
