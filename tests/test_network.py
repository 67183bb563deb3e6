"""The network gradient-noise oracle against brute force on tiny models (docs/theory.md §4).

Brute force: the model's own parameters set from the flat vector and autograd,
one example or one path at a time in a Python loop.  Statistical checks derive
their tolerance from the standard error of the estimator; nothing downloads.
"""

from __future__ import annotations

import copy
import math
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import Z_TOL
from optsde.optimizers import Hyperparameters, get_optimizer
from optsde.problems import GradientOracle, ProblemError
from optsde.problems.base import NEEDS
from optsde.problems.datasets import DatasetError, breast_cancer, digits, load_dataset
from optsde.problems.models import ARCHITECTURES, MLP, ModelError, build_model, count_parameters
from optsde.problems.network import NetworkProblem, network_problem
from optsde.randomness import GeneratorSource
from optsde.sde import DiscreteRunner, SDERunner, simulate

DTYPE = torch.float64


def tiny_problem(**options) -> NetworkProblem:
    """A 1-hidden-layer MLP of width 4 on 40 breast-cancer examples: 134 parameters."""
    torch.manual_seed(0)
    data = breast_cancer(train_size=40, seed=1)
    options.setdefault("batch_size", 8)
    return NetworkProblem(model=MLP(30, 2, width=4, depth=1), data=data, **options)


def start(problem: NetworkProblem, paths: int, seed: int = 0, spread: float = 0.3) -> torch.Tensor:
    """``paths`` distinct parameter vectors near the initialisation."""
    gen = torch.Generator().manual_seed(seed)
    x0 = problem.x0(seed, dtype=DTYPE)
    return x0 + spread * torch.randn(paths, problem.dim, generator=gen, dtype=DTYPE)


def as_model(problem: NetworkProblem, flat: torch.Tensor) -> nn.Module:
    model = copy.deepcopy(problem.model).to(DTYPE)
    nn.utils.vector_to_parameters(flat.detach().clone(), model.parameters())
    return model


def estimation_data(problem: NetworkProblem) -> tuple[torch.Tensor, torch.Tensor]:
    index = problem.estimation_indices
    return problem.data.inputs[index].to(DTYPE), problem.data.targets[index]


def brute_example_gradients(problem: NetworkProblem, flat: torch.Tensor) -> torch.Tensor:
    """``(n, d)``: ``∇ℓ_n`` one example at a time."""
    model = as_model(problem, flat)
    inputs, targets = estimation_data(problem)
    rows = []
    for i in range(len(targets)):
        loss = F.cross_entropy(model(inputs[i : i + 1]), targets[i : i + 1])
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(model.parameters()))]))
    return torch.stack(rows)


def test_is_a_gradient_oracle():
    assert isinstance(tiny_problem(), GradientOracle)


def test_loss_and_gradient_match_autograd_of_the_full_loss():
    problem = tiny_problem(estimation_size=30)
    x = start(problem, paths=3)
    loss, gradient = problem.loss(x), problem.grad(x)
    inputs, targets = estimation_data(problem)
    assert len(targets) == 30
    for p in range(3):
        model = as_model(problem, x[p])
        full = F.cross_entropy(model(inputs), targets)
        expected = torch.cat([g.reshape(-1) for g in torch.autograd.grad(full, list(model.parameters()))])
        assert torch.allclose(loss[p], full.detach(), rtol=1e-12, atol=1e-12)
        assert torch.allclose(gradient[p], expected, rtol=1e-10, atol=1e-12)


def test_loss_before_and_after_gradient_agree():
    problem = tiny_problem()
    x = start(problem, paths=2)
    before = problem.loss(x).clone()
    other = tiny_problem()
    other.grad(x)
    assert torch.allclose(before, other.loss(x), rtol=1e-12)


def test_per_example_variance_is_exact():
    problem = tiny_problem(variance="per-example", batch_size=5, sampling="with-replacement")
    x = start(problem, paths=2)
    variance = problem.noise_variance(x)
    for p in range(2):
        per_example = brute_example_gradients(problem, x[p])
        c_diag = per_example.var(dim=0, unbiased=False)
        assert torch.allclose(variance[p], c_diag / 5, rtol=1e-9, atol=1e-14)
        assert torch.allclose(problem.grad(x)[p], per_example.mean(dim=0), rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("chunk_size", [None, 7])
def test_layerwise_mlp_variance_equals_per_example_gradients(chunk_size):
    fast = tiny_problem(chunk_size=chunk_size)
    slow = tiny_problem(chunk_size=chunk_size, fast_linear=False)
    x = start(fast, paths=3)
    assert torch.allclose(fast.example_variance(x), slow.example_variance(x), rtol=1e-9, atol=1e-16)
    assert torch.allclose(fast.grad(x), slow.grad(x), rtol=1e-10, atol=1e-15)


def test_projection_variance_is_a_function_of_x():
    """Resuming a run must give the same numbers: no hidden random state in the oracle."""
    x = start(tiny_problem(), paths=2)
    first = tiny_problem(variance="projection").noise_variance(x)
    assert torch.equal(first, tiny_problem(variance="projection").noise_variance(x.clone()))
    assert not torch.equal(first, tiny_problem(variance="projection", seed=1).noise_variance(x))


def test_chunked_per_example_variance_and_gradient_agree_with_unchunked():
    whole = tiny_problem()
    chunked = tiny_problem(chunk_size=7)
    x = start(whole, paths=3)
    assert torch.allclose(whole.grad(x), chunked.grad(x), rtol=1e-10, atol=1e-14)
    assert torch.allclose(whole.noise_variance(x), chunked.noise_variance(x), rtol=1e-9, atol=1e-15)
    assert torch.allclose(whole.loss(x), chunked.loss(x), rtol=1e-12)


def test_projection_variance_is_unbiased():
    """``mean_k ξ_k²`` with ``ξ_k ~ N(0, C)`` exactly: each coordinate ``C_ii χ²_K / K``."""
    k = 400
    problem = tiny_problem(variance="projection", projections=k, sampling="with-replacement", batch_size=1)
    x = start(problem, paths=1)
    estimate = problem.noise_variance(x)[0]
    exact = brute_example_gradients(problem, x[0]).var(dim=0, unbiased=False)
    stderr = exact * math.sqrt(2.0 / k)
    live = exact > 1e-12 * exact.max()
    z = (estimate - exact)[live] / stderr[live]
    assert z.abs().max() < 5.5, z.abs().max()
    assert abs(float(z.mean())) < 5 / math.sqrt(live.sum()) + 0.25  # coordinates are correlated
    assert torch.all(estimate[~live] < 1e-10 * exact.max())


def test_weighted_loss_noise_has_covariance_c_over_b():
    """Many paths at one ``x``, each its own ``z``: the sample covariance against ``C·factor``
    from per-example gradients, entry by entry in units of its Wishart standard error."""
    problem = tiny_problem(batch_size=4)  # without replacement: factor (N−B)/((N−1)B)
    samples = 6000
    x = start(problem, paths=1).expand(samples, -1).clone()
    gen = torch.Generator().manual_seed(3)
    noise = problem.gaussian_noise(x, gen)
    per_example = brute_example_gradients(problem, x[0])
    centred = per_example - per_example.mean(dim=0)
    sigma = centred.T @ centred / len(centred) * problem.covariance_factor
    assert problem.covariance_factor == pytest.approx((40 - 4) / (39 * 4))
    empirical = noise.T @ noise / samples  # the mean is known to be 0
    diag = sigma.diagonal()
    stderr = ((sigma**2 + diag[:, None] * diag[None, :]) / samples).sqrt()
    live = stderr > 1e-12 * stderr.max()
    z = (empirical - sigma)[live] / stderr[live]
    assert z.abs().max() < 6.0, z.abs().max()
    assert torch.all((empirical - sigma)[~live].abs() < 1e-12)
    mean_z = noise.mean(dim=0) / (diag / samples).sqrt().clamp_min(1e-30)
    assert mean_z[diag > 1e-12 * diag.max()].abs().max() < 6.0


@pytest.mark.parametrize("sampling", ["without-replacement", "with-replacement"])
def test_minibatch_gradients_average_to_the_full_gradient_with_the_predicted_variance(sampling):
    problem = tiny_problem(batch_size=6, sampling=sampling)
    samples = 6000
    x = start(problem, paths=1).expand(samples, -1).clone()
    gen = torch.Generator().manual_seed(5)
    minibatch = problem.sample_gradient(x, gen)
    full = problem.grad(x[:1])[0]
    deviation = minibatch - full
    # Mean: each coordinate within 5.5 standard errors.
    spread = deviation.std(dim=0)
    live = spread > 1e-12 * spread.max()
    z = deviation.mean(dim=0)[live] / (spread[live] / math.sqrt(samples))
    assert z.abs().max() < 5.5, z.abs().max()
    # Trace of the covariance: E‖g − ∇f‖² = Σ_i diag Σ_B, finite-population factor included.
    squared = (deviation**2).sum(dim=1)
    predicted = float(problem.noise_variance(x[:1]).sum())
    assert abs(float(squared.mean()) - predicted) < 5 * float(squared.std()) / math.sqrt(samples)


def test_minibatches_are_independent_across_paths_and_without_repeats():
    problem = tiny_problem(batch_size=10)
    index = problem.minibatch_indices(50, torch.Generator().manual_seed(0))
    assert index.shape == (50, 10)
    assert all(len(set(row.tolist())) == 10 for row in index)
    assert len({tuple(sorted(row.tolist())) for row in index}) == 50


def test_one_evaluation_answers_every_need_as_the_separate_methods_do():
    """A step asks ``evaluate`` once; its answers are the separate methods' answers at ``x``
    (the noise sample from the same draws), and an in-place change of ``x`` is seen."""
    problem = tiny_problem()
    x = start(problem, paths=2)
    at = problem.evaluate(x, NEEDS, GeneratorSource(torch.Generator().manual_seed(4)))
    torch.testing.assert_close(at.grad, problem.grad(x))
    torch.testing.assert_close(at.variance, problem.noise_variance(x))
    torch.testing.assert_close(at.scale, problem.noise_scale(x))
    torch.testing.assert_close(at.expected_sign, problem.expected_sign(x))
    torch.testing.assert_close(at.noise, problem.gaussian_noise(x, torch.Generator().manual_seed(4)))
    x.add_(0.1)
    assert not torch.allclose(problem.evaluate(x, frozenset({"grad"}), GeneratorSource()).grad, at.grad)


def test_expected_sign_is_erf_and_finite_where_noise_vanishes():
    problem = tiny_problem()
    x = start(problem, paths=2)
    x[:, 120:124] = -50.0  # first-layer biases: every hidden unit dead on every example
    sign = problem.expected_sign(x)
    assert torch.isfinite(sign).all()
    scale = problem.noise_scale(x)
    gradient = problem.grad(x)
    noisy = scale > 0
    assert (~noisy).any()
    expected = torch.erf(gradient[noisy] / (math.sqrt(2) * scale[noisy]))
    assert torch.allclose(sign[noisy], expected)
    assert torch.equal(sign[~noisy], torch.sign(gradient[~noisy]))


def sampled_sign_z(problem: NetworkProblem, x: torch.Tensor, exact: torch.Tensor, paths: int) -> torch.Tensor:
    """z-scores of the oracle's sampled ``E sign`` (``paths`` rows of ``x``, ``K`` signs each) against
    ``exact``: each row is a mean of ``K`` independent signs, so the overall mean has variance
    ``(1 − exact²)/(paths·K)``."""
    rows = x.expand(paths, -1).clone()
    at = problem.evaluate(
        rows, frozenset({"expected_sign"}), GeneratorSource(torch.Generator().manual_seed(3))
    )
    draws = paths * problem.sign_samples
    se = ((1 - exact**2).clamp_min(0) / draws).sqrt()
    moving = se > 0
    assert moving.sum() > 50 and torch.equal(at.expected_sign.mean(0)[~moving], exact[~moving])
    return (at.expected_sign.mean(0)[moving] - exact[moving]) / se[moving]


def test_sampled_expected_sign_is_unbiased_for_the_true_sign_mean():
    """``sign_samples = K``: the general form of Thm 3.2 from real minibatch signs.  Ground truth
    where it is exact: Gaussian synthetic noise (``erf(∇f/(√2 s))``), and one example drawn with
    replacement, where ``E sign`` is the mean over examples of ``sign ∇ℓ_n`` (brute force)."""
    gaussian = tiny_problem(noise="synthetic", sigma=0.5, batch_size=4, sign_samples=8)
    x = start(gaussian, paths=1)
    exact = torch.erf(gaussian.grad(x)[0] / (math.sqrt(2) * gaussian.noise_scale(x)[0]))
    assert sampled_sign_z(gaussian, x, exact, paths=500).abs().max() < Z_TOL
    single = tiny_problem(batch_size=1, sampling="with-replacement", sign_samples=16)
    exact = torch.sign(brute_example_gradients(single, x[0])).mean(0)
    assert sampled_sign_z(single, x, exact, paths=400).abs().max() < Z_TOL
    with pytest.raises(ProblemError, match="sign_samples"):
        tiny_problem(sign_samples=1)


def test_synthetic_noise_is_full_gradient_plus_isotropic_gaussian():
    problem = tiny_problem(noise="synthetic", sigma=0.5, batch_size=4)
    x = start(problem, paths=1).expand(4000, -1).clone()
    assert torch.allclose(problem.noise_variance(x), torch.full_like(x, 0.25 / 4))
    deviation = problem.sample_gradient(x, torch.Generator().manual_seed(1)) - problem.grad(x[:1])
    assert abs(float(deviation.var()) - 0.25 / 4) < 0.02 * 0.25 / 4
    assert abs(float(deviation.mean())) < 5 * 0.25 / math.sqrt(4000 * problem.dim)


def test_options_are_checked_with_helpful_messages():
    with pytest.raises(ProblemError, match="sigma"):
        tiny_problem(noise="synthetic")
    with pytest.raises(ProblemError, match="variance"):
        tiny_problem(variance="exact-ish")
    with pytest.raises(ProblemError, match="batch_size"):
        tiny_problem(batch_size=41)
    with pytest.raises(ProblemError, match="estimation_size"):
        tiny_problem(estimation_size=0)
    with pytest.raises(ProblemError, match="shape"):
        tiny_problem().grad(torch.zeros(2, 3, dtype=DTYPE))


def test_x0_is_deterministic_per_seed():
    problem = tiny_problem()
    assert torch.equal(problem.x0(3), problem.x0(3))
    assert not torch.equal(problem.x0(3), problem.x0(4))
    assert problem.x0(0).shape == (problem.dim,) == (134,)


def test_curvature_estimate_matches_the_hessian_diagonal():
    problem = tiny_problem()
    point = problem.x0(0, dtype=DTYPE)
    inputs, targets = estimation_data(problem)

    def f(flat):
        model = as_model(problem, point)
        params = dict(
            zip(
                [n for n, _ in model.named_parameters()],
                torch.split(flat, [p.numel() for p in model.parameters()]),
                strict=True,
            )
        )
        params = {
            n: v.reshape(p.shape) for (n, p), v in zip(model.named_parameters(), params.values(), strict=True)
        }
        return F.cross_entropy(torch.func.functional_call(model, params, (inputs,)), targets)

    exact = torch.autograd.functional.hessian(f, point)
    estimate = problem.curvature(point, samples=400)
    off_diagonal = (exact**2).sum(dim=1) - exact.diagonal() ** 2
    tolerance = 5 * (off_diagonal / 400).sqrt() + 1e-10
    assert torch.all((estimate - exact.diagonal()).abs() <= tolerance)
    assert math.isfinite(problem.kappa(1e-3, point))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_each_architecture_matches_brute_force(arch):
    data = breast_cancer(train_size=12) if arch == "mlp" else digits(train_size=12)
    model = build_model(arch, data.input_shape, data.num_classes, width=4 if arch != "transformer" else 8)
    problem = NetworkProblem(model=model, data=data, batch_size=3)
    x = start(problem, paths=2, spread=0.05)
    gradient, variance = problem.grad(x), problem.noise_variance(x)
    for p in range(2):
        per_example = brute_example_gradients(problem, x[p])
        assert torch.allclose(gradient[p], per_example.mean(dim=0), rtol=1e-8, atol=1e-12)
        expected = per_example.var(dim=0, unbiased=False) * problem.covariance_factor
        assert torch.allclose(variance[p], expected, rtol=1e-7, atol=1e-14)
    minibatch = problem.sample_gradient(x, torch.Generator().manual_seed(0))
    assert minibatch.shape == x.shape and torch.isfinite(minibatch).all()


def test_quick_models_are_small_and_scale_with_width():
    image = digits(train_size=10)
    for arch in ARCHITECTURES:
        shape = (30,) if arch == "mlp" else image.input_shape
        size = count_parameters(build_model(arch, shape, 10))
        assert 1_000 <= size <= 10_000, (arch, size)
        assert count_parameters(build_model(arch, shape, 10, width=64)) > size
        assert build_model(arch, shape, 10)(torch.zeros(5, *shape)).shape == (5, 10)
    for shape in [(1, 28, 28), (3, 32, 32)]:
        for arch in ARCHITECTURES[1:]:
            assert build_model(arch, shape, 10)(torch.zeros(2, *shape)).shape == (2, 10)
    with pytest.raises(ModelError, match="image"):
        build_model("cnn", (30,), 2)
    with pytest.raises(ModelError, match="unknown model"):
        build_model("lstm", (30,), 2)


def test_datasets_are_standardised_subsets_fixed_by_the_seed():
    data = load_dataset("breast-cancer", train_size=100, seed=2)
    assert data.inputs.shape == (100, 30) and data.num_classes == 2
    assert torch.allclose(data.inputs.mean(0), torch.zeros(30), atol=1e-5)
    assert torch.allclose(data.inputs.std(0, unbiased=False), torch.ones(30), atol=1e-4)
    assert torch.equal(data.inputs, load_dataset("breast_cancer", train_size=100, seed=2).inputs)
    assert not torch.equal(data.inputs, load_dataset("breast-cancer", train_size=100, seed=3).inputs)
    images = load_dataset("digits", train_size=64)
    assert images.inputs.shape == (64, 1, 8, 8) and images.is_image and images.num_classes == 10
    assert abs(float(images.inputs.mean())) < 1e-5 and abs(float(images.inputs.std()) - 1) < 1e-2
    assert len(load_dataset("digits")) == 1797
    with pytest.raises(DatasetError, match="train_size"):
        load_dataset("digits", train_size=5000)
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("imagenet")


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_vision_datasets_without_torchvision_say_how_to_get_it(name, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import fails
    with pytest.raises(DatasetError) as info:
        load_dataset(name, root=tmp_path)
    message = str(info.value)
    assert "\n" not in message and "pip install" in message


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_missing_vision_dataset_says_how_to_get_it(name, tmp_path):
    pytest.importorskip("torchvision")
    with pytest.raises(DatasetError) as info:
        load_dataset(name, root=tmp_path, download=False)
    message = str(info.value)
    assert "\n" not in message and "download=true" in message and str(tmp_path) in message


@pytest.mark.parametrize("optimizer", ["signsgd", "rmspropw", "adamw"])
def test_optimizers_and_sdes_run_on_a_network(optimizer):
    problem = network_problem(
        "mlp", "breast-cancer", width=8, train_size=64, batch_size=8, variance="projection"
    )
    spec = get_optimizer(optimizer)
    hp = Hyperparameters(lr=1e-3, weight_decay=0.1 if optimizer != "signsgd" else 0.0)
    x0 = problem.x0(0)
    for runner in [DiscreteRunner(spec.discrete), SDERunner(spec.sdes["paper"])]:
        rec = simulate(
            runner,
            problem,
            hp,
            x0,
            paths=3,
            steps=20,
            record_at=[0, 10, 20],
            generator=torch.Generator().manual_seed(0),
        )
        assert rec.divergence is None and rec.values["loss"].shape == (3, 3)
        assert (rec.values["loss"][-1] < rec.values["loss"][0] + 1e-3).all()


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_one_pass_gives_gradient_variance_and_noise_of_brute_force(arch, monkeypatch):
    """A step needing ∇f, the exact diag C and a noise sample gets all three from one pass over
    per-example gradients; each equals its brute-force value, the noise
    ``n^{-1/2} Σ_n z_n (∇ℓ_n − ∇f) · √factor`` for the very ``z`` the step drew."""
    data = breast_cancer(train_size=12) if arch == "mlp" else digits(train_size=12)
    model = build_model(arch, data.input_shape, data.num_classes, width=4 if arch != "transformer" else 8)
    problem = NetworkProblem(model=model, data=data, batch_size=3)
    x = start(problem, paths=2, spread=0.05)

    def no_second_pass(*args):
        raise AssertionError("the noise took a weighted-loss pass of its own")

    monkeypatch.setattr(problem, "_weighted_gradients", no_second_pass)
    needs = frozenset({"grad", "variance", "noise"})
    at = problem.evaluate(x, needs, GeneratorSource(torch.Generator().manual_seed(5)))
    z = GeneratorSource(torch.Generator().manual_seed(5)).normal((2, problem.estimation_size), x)
    for p in range(2):
        per_example = brute_example_gradients(problem, x[p])
        mean = per_example.mean(dim=0)
        torch.testing.assert_close(at.grad[p], mean, rtol=1e-8, atol=1e-12)
        expected = per_example.var(dim=0, unbiased=False) * problem.covariance_factor
        torch.testing.assert_close(at.variance[p], expected, rtol=1e-7, atol=1e-14)
        noise = z[p] @ (per_example - mean) / math.sqrt(12) * math.sqrt(problem.covariance_factor)
        torch.testing.assert_close(at.noise[p], noise, rtol=1e-7, atol=1e-12)
