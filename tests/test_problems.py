"""Noise models and analytic problems (docs/theory.md §1, §3, §4) against independent references.

Sampled noise is checked statistically (tolerances from the Monte Carlo standard
error, see ``conftest``); gradients against ``torch.autograd`` or a hand-derived
formula; the Student-t sampler against ``scipy.stats.t``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from conftest import Z_TOL, Estimate, assert_agree, estimate
from optsde.noise import GaussianNoise, NoiseError, StudentTNoise
from optsde.problems import (
    EmbeddedSaddle,
    GradientOracle,
    NoisyProblem,
    ProblemError,
    Quadratic,
    UserFunction,
)

N = 200_000  # samples per noise check: SEs of ~0.3% on a variance


def at_origin(paths: int, dim: int, dtype=torch.float64) -> torch.Tensor:
    return torch.zeros(paths, dim, dtype=dtype)


# ---------------------------------------------------------------- Gaussian noise


@pytest.mark.parametrize("batch_size", [1, 4, 16])
def test_gaussian_variance_and_batch_scaling(batch_size, generator):
    scale = torch.tensor([0.5, 1.0, 2.0])
    noise = GaussianNoise(3, scale=scale, batch_size=batch_size)
    x = at_origin(N, 3)
    expected = scale.double() ** 2 / batch_size  # Σ/B, docs/theory.md §1
    torch.testing.assert_close(noise.variance(x[:1])[0], expected)
    z = noise.sample(x, generator(1))
    assert z.shape == x.shape and z.dtype == x.dtype
    for i in range(3):
        assert_agree(estimate(z[:, i]), 0.0, what=f"mean of coordinate {i}")
        # The mean is known to be 0, so E z² is the variance; its SE from the data.
        assert_agree(estimate(z[:, i] ** 2), float(expected[i]), what=f"variance of coordinate {i}")


def test_gaussian_state_dependent_scale(generator):
    def scale(x):
        return 0.5 + x.abs()

    noise = GaussianNoise(2, scale=scale, batch_size=4)
    point = torch.tensor([[0.3, -1.2]], dtype=torch.float64)
    x = point.expand(N, 2)
    expected = (0.5 + point.abs()) ** 2 / 4
    torch.testing.assert_close(noise.variance(point), expected)
    z = noise.sample(x, generator(2))
    for i in range(2):
        assert_agree(estimate(z[:, i] ** 2), float(expected[0, i]), what=f"coordinate {i}")


@pytest.mark.parametrize("batch_size", [1, 8])
def test_gaussian_full_covariance(batch_size, generator):
    g = generator(3)
    a = torch.randn(4, 4, generator=g, dtype=torch.float64)
    sigma = a @ a.T + 0.5 * torch.eye(4, dtype=torch.float64)
    noise = GaussianNoise(4, covariance=sigma, batch_size=batch_size)
    x = at_origin(N, 4)
    torch.testing.assert_close(noise.variance(x[:1])[0], sigma.diagonal() / batch_size)
    z = noise.gaussian(x, generator(4))
    for i in range(4):
        for j in range(i, 4):
            assert_agree(
                estimate(z[:, i] * z[:, j]),
                float(sigma[i, j] / batch_size),
                what=f"covariance entry ({i}, {j})",
            )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dim": 2},
        {"dim": 2, "scale": 1.0, "covariance": torch.eye(2)},
        {"dim": 2, "covariance": torch.tensor([[1.0, 2.0], [2.0, 1.0]])},
        {"dim": 2, "covariance": torch.eye(3)},
        {"dim": 2, "scale": torch.tensor([1.0, -0.1])},
        {"dim": 2, "scale": torch.tensor([1.0, 1.0, 1.0])},
        {"dim": 2, "scale": 1.0, "batch_size": 0},
    ],
)
def test_gaussian_noise_refuses_bad_parameters(kwargs):
    with pytest.raises(NoiseError):
        GaussianNoise(**kwargs)


# ---------------------------------------------------------------- Student-t noise


@pytest.mark.parametrize("nu", [1.0, 1.5, 2.5, 6.0])
def test_student_t_samples_follow_scipy(nu, generator):
    scale, batch_size = 2.0, 4
    noise = StudentTNoise(1, nu=nu, scale=scale, batch_size=batch_size)
    z = noise.sample(at_origin(N, 1), generator(5))[:, 0].numpy()
    t = z * math.sqrt(batch_size) / scale  # should be a standard t_ν
    # Kolmogorov–Smirnov at a fixed seed: p-values are uniform under the null.
    assert stats.kstest(t, stats.t(df=nu).cdf).pvalue > 1e-4
    # Quantiles, each within Z_TOL of its asymptotic SE sqrt(q(1−q)/N)/pdf(x_q).
    for q in (0.02, 0.1, 0.25, 0.5, 0.75, 0.9, 0.98):
        exact = stats.t.ppf(q, nu)
        se = math.sqrt(q * (1 - q) / t.size) / stats.t.pdf(exact, nu)
        assert abs(np.quantile(t, q) - exact) < Z_TOL * se, f"quantile {q}"


def test_student_t_variance(generator):
    nu, scale = 10.0, 0.7  # ν > 4: the sample variance has a finite SE
    noise = StudentTNoise(1, nu=nu, scale=scale, batch_size=2)
    x = at_origin(N, 1)
    expected = scale**2 / 2 * nu / (nu - 2)
    assert float(noise.variance(x[:1])) == pytest.approx(expected)
    assert_agree(estimate(noise.sample(x, generator(6)) ** 2), expected, what="t variance")
    # Its Gaussian surrogate (the SDE's diffusion) has the same variance.
    assert_agree(estimate(noise.gaussian(x, generator(7)) ** 2), expected, what="surrogate variance")


@pytest.mark.parametrize("nu", [0.5, 1.0, 2.0])
def test_student_t_without_variance(nu):
    noise = StudentTNoise(2, nu=nu, scale=1.0)
    assert torch.isinf(noise.variance(at_origin(3, 2))).all()


@pytest.mark.parametrize(
    "kwargs", [{"nu": 0.0}, {"nu": -1.0}, {"nu": math.inf}, {"nu": 3.0, "batch_size": 0}]
)
def test_student_t_refuses_bad_parameters(kwargs):
    with pytest.raises(NoiseError):
        StudentTNoise(1, **kwargs)


# ---------------------------------------------------------------- E sign(mean + Z)

MEANS = torch.tensor([-2.0, -0.5, 0.0, 0.1, 0.7, 1.5, 2.5], dtype=torch.float64)


@pytest.mark.parametrize(
    "noise",
    [
        GaussianNoise(7, scale=0.8, batch_size=2),
        StudentTNoise(7, nu=1.0, scale=0.8, batch_size=2),
        StudentTNoise(7, nu=3.0, scale=0.8),
    ],
    ids=["gaussian", "cauchy", "t3"],
)
def test_expected_sign_matches_monte_carlo(noise, generator):
    x = at_origin(N, 7)
    means = MEANS * 0.8
    exact = noise.expected_sign(means.expand(1, 7), x[:1])[0]
    signs = torch.sign(means + noise.sample(x, generator(8)))
    for i in range(7):
        # sign(·) = ±1, so under the hypothesis its variance is 1 − E²: the exact binomial SE.
        mc = estimate(signs[:, i])
        null_se = math.sqrt((1 - float(exact[i]) ** 2) / N)
        assert_agree(Estimate(mc.mean, null_se), float(exact[i]), what=f"E sign at mean {float(means[i]):g}")
    # An odd function of the mean, and it saturates at ±1.
    torch.testing.assert_close(noise.expected_sign(-means.expand(1, 7), x[:1])[0], -exact)
    assert float(exact[2]) == 0.0


def test_problem_expected_sign_uses_the_true_gradient(generator):
    problem = NoisyProblem(Quadratic(torch.tensor([1.0, 3.0])), GaussianNoise(2, scale=0.5))
    point = torch.tensor([[0.2, -0.1]], dtype=torch.float64)
    x = point.expand(N, 2)
    signs = torch.sign(problem.sample_gradient(x, generator(9)))
    exact = problem.expected_sign(point)[0]
    for i in range(2):
        assert_agree(estimate(signs[:, i]), float(exact[i]), what=f"coordinate {i}")


# ---------------------------------------------------------------- landscapes


def random_points(dim: int, seed: int, paths: int = 6) -> torch.Tensor:
    return 2.0 * torch.randn(paths, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def autograd_grad(loss_fn, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_fn(x).sum(), x)
    return grad


@pytest.mark.parametrize("full", [False, True], ids=["diagonal", "full"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_quadratic_gradient_and_loss(full, dtype):
    g = torch.Generator().manual_seed(11)
    if full:
        a = torch.randn(4, 4, generator=g, dtype=torch.float64)
        hessian = (a + a.T) / 2  # symmetric, indefinite is allowed
    else:
        hessian = torch.tensor([0.5, 1.0, 2.0, 10.0], dtype=torch.float64)
    minimum = torch.tensor([1.0, -2.0, 0.0, 0.5], dtype=torch.float64)
    problem = Quadratic(hessian, minimum)
    x = random_points(4, 12).to(dtype)
    h = torch.diag(hessian) if not full else hessian
    y = (x.double() - minimum).T
    expected_loss = 0.5 * (y * (h @ y)).sum(0)  # ½ (x−x*)ᵀ H (x−x*), written out
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
    loss = problem.loss(x)
    assert loss.dtype == dtype
    torch.testing.assert_close(loss.double(), expected_loss, **tol)
    torch.testing.assert_close(problem.grad(x), autograd_grad(problem.loss, x), **tol)
    torch.testing.assert_close(problem.grad(x).double(), (h @ y).T, **tol)


def test_quadratic_curvature():
    assert torch.equal(Quadratic(torch.tensor([1.0, 3.0])).curvature(), torch.tensor([1.0, 3.0]).double())
    rotation = torch.tensor([[math.cos(0.3), -math.sin(0.3)], [math.sin(0.3), math.cos(0.3)]])
    full = rotation @ torch.diag(torch.tensor([2.0, 5.0])) @ rotation.T
    torch.testing.assert_close(Quadratic(full).curvature(), torch.tensor([2.0, 5.0]).double())


@pytest.mark.parametrize(
    "hessian", [torch.ones(2, 3), torch.tensor([[1.0, 2.0], [0.0, 1.0]]), torch.ones(2, 2, 2)]
)
def test_quadratic_refuses_bad_hessians(hessian):
    with pytest.raises(ProblemError):
        Quadratic(hessian)


@pytest.mark.parametrize("wells", [1, 2])
def test_embedded_saddle(wells):
    h = torch.tensor([1.0, 4.0], dtype=torch.float64)
    saddle = EmbeddedSaddle(h, wells=wells)
    dim = 2 + wells
    assert saddle.dim == dim

    def reference_loss(x):  # docs/theory.md §7 item 3, written out; shifted so the minimum value is 0
        q, w = x[:, :2], x[:, 2:]
        return 0.5 * (h * q**2).sum(1) + (w**4 / 4 - w**2 / 2 + 0.25).sum(1)

    x = random_points(dim, 13)
    torch.testing.assert_close(saddle.loss(x), reference_loss(x))
    torch.testing.assert_close(saddle.grad(x), autograd_grad(reference_loss, x))

    # Minima: quadratic part at 0, every well coordinate at ±1.
    for signs in torch.cartesian_prod(*[torch.tensor([-1.0, 1.0])] * wells).reshape(-1, wells):
        point = torch.cat([torch.zeros(2), signs]).double()
        assert saddle.grad(point[None]).abs().max() < 1e-15
        assert abs(float(saddle.loss(point[None]))) < 1e-15
        hessian = torch.autograd.functional.hessian(lambda v: saddle.loss(v[None])[0], point)
        torch.testing.assert_close(torch.linalg.eigvalsh(hessian), torch.sort(saddle.curvature()).values)
    # The saddle at 0: a critical point with a negative curvature along each well.
    origin = torch.zeros(dim, dtype=torch.float64)
    assert saddle.grad(origin[None]).abs().max() == 0
    hessian = torch.autograd.functional.hessian(lambda v: saddle.loss(v[None])[0], origin)
    assert (torch.linalg.eigvalsh(hessian) < 0).sum() == wells
    assert (saddle.loss(random_points(dim, 14, paths=1000)) >= 0).all()


def test_embedded_saddle_needs_a_well():
    with pytest.raises(ProblemError):
        EmbeddedSaddle(torch.tensor([1.0]), wells=0)


def test_user_function_gradient_and_curvature():
    def fn(v):
        return torch.sin(v[0]) * v[1] ** 2 + torch.exp(0.3 * v[2]) + 0.5 * (v * v).sum()

    def analytic_grad(x):
        a, b, c = x.unbind(-1)
        return torch.stack(
            [torch.cos(a) * b**2 + a, 2 * torch.sin(a) * b + b, 0.3 * torch.exp(0.3 * c) + c], -1
        )

    reference = torch.tensor([0.4, -1.0, 2.0], dtype=torch.float64)
    problem = UserFunction(fn, dim=3, reference=reference)
    x = random_points(3, 15)
    torch.testing.assert_close(problem.loss(x), torch.stack([fn(row) for row in x]))
    torch.testing.assert_close(problem.grad(x), analytic_grad(x))
    a, b, c = reference
    hessian_diag = torch.stack(
        [-torch.sin(a) * b**2 + 1, 2 * torch.sin(a) + 1, 0.09 * torch.exp(0.3 * c) + 1]
    )
    torch.testing.assert_close(problem.curvature(), hessian_diag.abs())


def test_noisy_problem_is_an_oracle_and_computes_kappa():
    # κ = η · max_i h_i / s_i with s the per-coordinate noise std, batch size included (docs/theory.md §3).
    h, scale, batch_size, lr = [1.0, 3.0, 0.2], [0.5, 1.5, 0.01], 4, 0.01
    problem = NoisyProblem(
        Quadratic(torch.tensor(h)), GaussianNoise(3, scale=torch.tensor(scale), batch_size=batch_size)
    )
    assert isinstance(problem, GradientOracle)
    expected = lr * max(hi / (si / math.sqrt(batch_size)) for hi, si in zip(h, scale, strict=True))
    assert problem.kappa(lr) == pytest.approx(expected)
    assert expected == pytest.approx(lr * 0.2 / 0.005)  # the flat but nearly noiseless coordinate wins

    # A full Hessian: its eigenvalues are the curvatures.
    full = torch.tensor([[2.0, 1.0], [1.0, 2.0]])  # eigenvalues 1 and 3
    problem = NoisyProblem(Quadratic(full), GaussianNoise(2, scale=0.5))
    assert problem.kappa(0.1) == pytest.approx(0.1 * 3 / 0.5)


def test_noisy_problem_refuses_mismatched_noise():
    with pytest.raises(ProblemError):
        NoisyProblem(Quadratic(torch.tensor([1.0, 2.0])), GaussianNoise(3, scale=1.0))


def test_noisy_problem_gradient_is_unbiased_with_the_noise_variance(generator):
    problem = NoisyProblem(
        Quadratic(torch.tensor([1.0, 3.0]), torch.tensor([0.5, 0.5])),
        GaussianNoise(2, scale=0.3, batch_size=9),
    )
    point = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    samples = problem.sample_gradient(point.expand(N, 2), generator(16))
    mean_grad = problem.grad(point)[0]
    variance = problem.noise_variance(point)[0]
    torch.testing.assert_close(variance, torch.full((2,), 0.01, dtype=torch.float64))
    torch.testing.assert_close(problem.noise_scale(point)[0], variance.sqrt())
    for i in range(2):
        assert_agree(estimate(samples[:, i]), float(mean_grad[i]), what="mean gradient")
        assert_agree(estimate((samples[:, i] - mean_grad[i]) ** 2), float(variance[i]), what="noise variance")


def test_expected_sign_without_noise_is_the_sign_of_the_gradient():
    """A coordinate with s = 0 (a dead unit of a network) has E sign(∇f) = sign(∇f), not 0/0."""
    mean = torch.tensor([[0.0, -2.0, 3.0]], dtype=torch.float64)
    scale = torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64)
    for noise in (GaussianNoise(3, scale=scale), StudentTNoise(3, nu=3.0, scale=scale)):
        signs = noise.expected_sign(mean, torch.zeros_like(mean))
        assert torch.equal(signs, torch.sign(mean))


def test_student_t_noise_is_not_compiled_and_runs_eagerly():
    """Student-t noise's ``E sign`` calls scipy (its CDF), so the problem is not pure torch: with
    ``compile="on"`` SignSGD's paper SDE (which asks the oracle for ``E sign``) runs eagerly, says
    why, and gives the numbers of an eager run from the same seed."""
    from optsde.optimizers import Hyperparameters, get_optimizer
    from optsde.sde import SDERunner, simulate

    h = torch.tensor([1.0, 2.0], dtype=torch.float64)
    assert NoisyProblem(Quadratic(h), GaussianNoise(2, scale=1.0)).compilable
    problem = NoisyProblem(Quadratic(h), StudentTNoise(2, nu=3.0))
    assert not problem.compilable
    runner, x0 = SDERunner(get_optimizer("signsgd").sde("paper")), torch.ones(2, dtype=torch.float64)
    runs = {
        mode: simulate(
            runner,
            problem,
            Hyperparameters(lr=0.01),
            x0,
            paths=8,
            steps=40,
            compile=mode,
            generator=torch.Generator().manual_seed(0),
        )
        for mode in ("on", "off")
    }
    assert runs["on"].engine["path"] == "eager"
    assert "not pure torch" in runs["on"].engine["fallback_reason"]
    np.testing.assert_array_equal(runs["on"].values["loss"], runs["off"].values["loss"])
