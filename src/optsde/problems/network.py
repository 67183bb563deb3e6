"""The gradient-noise oracle of a network: model + data + per-example loss (docs/theory.md §4).

:class:`NetworkProblem` is a :class:`~optsde.problems.base.GradientOracle` whose
coordinates are a model's parameters, flattened into one vector.  The model is
used functionally (``torch.func.functional_call``) and batched over paths with
``torch.func.vmap``, so ``P`` parameter vectors are evaluated together.

With per-example losses ``ℓ_n`` on the estimation set (``n`` examples, by
default the whole training set): ``f = mean_n ℓ_n``, ``∇f = mean_n ∇ℓ_n``,
``C = cov_n ∇ℓ_n`` (divided by ``n``), and a minibatch of ``B`` examples has
gradient-noise covariance ``Σ_B = C/B``, times the finite-population factor
``(N−B)/(N−1)`` when the ``B`` examples are drawn without replacement from the
``N`` training examples (the default, as in training; with replacement the
factor is 1).  Which quantity costs what, per ``x``:

- ``grad``: one forward pass with a graph over the estimation set and one
  backward pass of the mean loss;
- ``gaussian_noise``: one more backward pass of the randomly weighted loss
  ``Σ_n z_n ℓ_n / √n`` (docs/theory.md §4), ``ξ = N^{-1/2} Σ_n z_n (∇ℓ_n − ∇f)``: covariance
  exactly ``C`` given ``x``, no per-example gradients;
- ``noise_variance``: ``diag C / B`` either exact (``variance="per-example"``) or
  unbiased from ``projections`` more weighted-loss passes
  (``variance="projection"``, ``E ξ² = diag C``; cheap, but a noisy estimate:
  fine inside the EMA of RMSprop/Adam's ``V``, biased inside SignSGD's
  ``erf(∇f/(√2 s))``, where ``E 1/|ξ|`` is infinite for one projection).  The
  exact path uses per-example gradients (``torch.func.vmap(grad)``, memory and
  time ∝ P·n·d) except for models made only of ``nn.Linear`` layers (the MLP),
  where ``Σ_n (∇ℓ_n)² = (δ²)ᵀ(a²)`` layer by layer costs one more backward pass.

An SDE step asks :meth:`NetworkProblem.evaluate` once for everything it needs, so
``∇f``, ``diag C`` and the noise sample share one forward pass.  ``noise="synthetic"`` is the
paper's protocol instead: full-batch gradient plus ``N(0, σ²I/B)``.
"""

from __future__ import annotations

import copy
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from optsde.problems.analytic import ProblemError
from optsde.problems.base import Evaluation
from optsde.problems.datasets import Dataset, load_dataset
from optsde.problems.models import build_model
from optsde.randomness import RandomSource, as_source

LossFn = Callable[[Tensor, Tensor], Tensor]
"""``(outputs, targets)`` of a batch ↦ per-example losses ``(batch,)``."""


def cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(outputs, targets, reduction="none")


def squared_error(outputs: Tensor, targets: Tensor) -> Tensor:
    """``½‖outputs − one_hot(targets)‖²`` per example."""
    one_hot = F.one_hot(targets, outputs.shape[-1]).to(outputs.dtype)
    return 0.5 * ((outputs - one_hot) ** 2).sum(dim=-1)


LOSSES: dict[str, LossFn] = {"cross-entropy": cross_entropy, "mse": squared_error}

NOISE_MODES = ("minibatch", "synthetic")
VARIANCE_MODES = ("per-example", "projection")
SAMPLING_MODES = ("without-replacement", "with-replacement")

PER_EXAMPLE_CHUNK = 128
"""Per-example gradients are computed for this many examples at a time: on 2 CPU threads chunks
of 100–140 examples were the fastest on the CNN, the Transformer and the ResNet, and chunks of 50
or 256 cost 1.2–1.5× as much (docs/networks.md)."""

PER_EXAMPLE_BUDGET = 2**24
"""…and at most this many numbers (P · chunk · d, 64 MiB in float32) per chunk."""


@dataclass
class _Evaluation:
    """What has been computed at one ``x`` within one :meth:`NetworkProblem.evaluate`: the forward
    pass, ``∇f`` and ``diag C`` are shared by everything one step asks for."""

    x: Tensor
    leaf: Tensor | None = None
    losses: Tensor | None = None  # (P, n) per-example losses with their graph
    loss: Tensor | None = None  # (P,)
    grad: Tensor | None = None  # (P, d)
    variance: Tensor | None = None  # (P, d) diag C, per example (not divided by B)
    weighted: Tensor | None = None  # (P, d) Σ_n z_n ∇ℓ_n for the z the step's noise is drawn with


class _NotOncePerExample(Exception):
    """A linear layer saw more than one vector per example, or ran twice: no layer-wise identity."""


@dataclass
class _Layout:
    """How a flat parameter vector maps onto the model's named parameters."""

    names: list[str]
    shapes: list[torch.Size]
    sizes: list[int]

    @classmethod
    def of(cls, model: nn.Module) -> _Layout:
        named = list(model.named_parameters())
        return cls([n for n, _ in named], [p.shape for _, p in named], [p.numel() for _, p in named])

    @property
    def dim(self) -> int:
        return sum(self.sizes)

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """``(..., d)`` ↦ ``{name: (..., *shape)}`` (views)."""
        lead = flat.shape[:-1]
        pieces = flat.split(self.sizes, dim=-1)
        return {n: p.reshape(*lead, *s) for n, p, s in zip(self.names, pieces, self.shapes, strict=True)}

    def flatten(self, tensors: dict[str, Tensor], lead: int) -> Tensor:
        """``{name: (*lead_shape, *shape)}`` ↦ ``(*lead_shape, d)``, ``lead`` leading dims kept."""
        return torch.cat([tensors[n].flatten(lead) for n in self.names], dim=-1)


@dataclass
class NetworkProblem:
    """A model, a training set and a per-example loss as a batched gradient-noise oracle.

    Parameters
    ----------
    model: any ``nn.Module`` whose loss on a batch is a sum of per-example terms
        (no BatchNorm); only its structure and initialisers are used.
    data: the training set; minibatches of ``batch_size`` are drawn from it.
    batch_size: ``B``, the minibatch size the optimizer sees.
    loss: ``"cross-entropy"``, ``"mse"`` or a function ``(outputs, targets) → (batch,)``.
    estimation_size: ``n``, the fixed random subset of the training set on which
        ``f``, ``∇f`` and ``C`` are computed (default: all of it, so the SDE sees
        exactly the optimizer's objective).
    noise: ``"minibatch"`` (real minibatch noise, the default) or ``"synthetic"``
        (full-batch gradient plus ``N(0, σ²I/B)``, the paper's protocol; needs ``sigma``).
    variance: ``"per-example"`` (exact ``diag C``) or ``"projection"`` (unbiased
        estimate from ``projections`` weighted-loss passes).
    sampling: ``"without-replacement"`` (default) or ``"with-replacement"`` minibatches.
    chunk_size: examples per forward pass on the estimation set (default: all at once).
    seed: fixes the estimation subset and the projections' random numbers.
    fast_linear: for models made only of ``nn.Linear`` layers (the MLP), compute the
        exact ``diag C`` layer-wise from one backward pass per path instead of
        per-example gradients (same numbers, far cheaper).
    sign_samples: ``K``; 0 (default): :meth:`expected_sign` is the Gaussian form
        ``erf(∇f/(√2 s))``; ``K ≥ 2``: the general form of paper Thm 3.2, ``E sign ∇f_γ``
        estimated without bias by the mean sign of ``K`` real minibatch gradients per path
        (``K`` minibatch passes per path and step).
    """

    model: nn.Module
    data: Dataset
    batch_size: int
    loss_fn: str | LossFn = "cross-entropy"
    estimation_size: int | None = None
    noise: str = "minibatch"
    sigma: float | None = None
    variance: str = "per-example"
    projections: int = 1
    sampling: str = "without-replacement"
    chunk_size: int | None = None
    seed: int = 0
    fast_linear: bool = True
    sign_samples: int = 0
    dim: int = field(init=False)

    def __post_init__(self) -> None:
        self._check()
        self._per_example_loss: LossFn = (
            LOSSES[self.loss_fn] if isinstance(self.loss_fn, str) else self.loss_fn
        )
        self.model = self.model.eval()
        self._layout = _Layout.of(self.model)
        self._buffers = dict(self.model.named_buffers())
        self.dim = self._layout.dim
        n_train = len(self.data)
        n = n_train if self.estimation_size is None else self.estimation_size
        picker = torch.Generator().manual_seed(self.seed)
        self._estimation_index = (
            torch.arange(n_train) if n == n_train else torch.randperm(n_train, generator=picker)[:n].sort()[0]
        )
        self.estimation_size = n
        self._tensors: dict[tuple[torch.dtype, torch.device], tuple[Tensor, Tensor, Tensor, Tensor]] = {}

        def path_losses(w: Tensor, inputs: Tensor, targets: Tensor) -> Tensor:
            params = {**self._layout.unflatten(w), **self._buffers}
            return self._per_example_loss(functional_call(self.model, params, (inputs,)), targets)

        def example_loss(params: dict[str, Tensor], inputs: Tensor, targets: Tensor) -> Tensor:
            outputs = functional_call(self.model, {**params, **self._buffers}, (inputs[None],))
            return self._per_example_loss(outputs, targets[None]).sum()

        # Paths share the estimation set, but each path has its own minibatch.
        self._losses_shared = vmap(path_losses, in_dims=(0, None, None))
        self._losses_own = vmap(path_losses, in_dims=(0, 0, 0))
        self._example_grads = vmap(vmap(grad(example_loss), in_dims=(None, 0, 0)), in_dims=(0, None, None))

    def _check(self) -> None:
        if self.batch_size < 1:
            raise ProblemError(f"batch_size must be a positive integer, got {self.batch_size}")
        if self.noise not in NOISE_MODES:
            raise ProblemError(f"unknown noise {self.noise!r}; choose one of: {', '.join(NOISE_MODES)}")
        if self.noise == "synthetic" and (self.sigma is None or not self.sigma >= 0):
            raise ProblemError("noise=synthetic needs a noise level sigma ≥ 0, e.g. --set sigma=0.1")
        if self.variance not in VARIANCE_MODES:
            raise ProblemError(
                f"unknown variance {self.variance!r}; choose one of: {', '.join(VARIANCE_MODES)}"
            )
        if self.sign_samples == 1 or self.sign_samples < 0:
            raise ProblemError(
                f"sign_samples must be 0 (the Gaussian form) or at least 2, got {self.sign_samples}"
            )
        if self.projections < 1:
            raise ProblemError(f"projections must be a positive integer, got {self.projections}")
        if self.sampling not in SAMPLING_MODES:
            raise ProblemError(
                f"unknown sampling {self.sampling!r}; choose one of: {', '.join(SAMPLING_MODES)}"
            )
        if isinstance(self.loss_fn, str) and self.loss_fn not in LOSSES:
            raise ProblemError(f"unknown loss {self.loss_fn!r}; choose one of: {', '.join(LOSSES)}")
        n_train = len(self.data)
        if self.estimation_size is not None and not 1 <= self.estimation_size <= n_train:
            raise ProblemError(
                f"estimation_size must lie in [1, {n_train}] (the training set), got {self.estimation_size}"
            )
        if self.sampling == "without-replacement" and self.batch_size > n_train:
            raise ProblemError(
                f"batch_size {self.batch_size} exceeds the {n_train} training examples; "
                "use a smaller batch or sampling=with-replacement"
            )
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ProblemError(f"chunk_size must be a positive integer, got {self.chunk_size}")

    # ----------------------------------------------------------------- bookkeeping

    @property
    def train_size(self) -> int:
        return len(self.data)

    @property
    def estimation_indices(self) -> Tensor:
        """Training-set indices of the estimation set, sorted: ``(n,)``."""
        return self._estimation_index

    @property
    def covariance_factor(self) -> float:
        """``Σ_B = factor · C``: ``1/B``, times ``(N−B)/(N−1)`` without replacement."""
        n_train = len(self.data)
        if self.sampling == "with-replacement" or n_train == 1:
            return 1.0 / self.batch_size
        return (n_train - self.batch_size) / ((n_train - 1) * self.batch_size)

    def describe(self) -> dict[str, Any]:
        """The oracle's settings, for a run's summary."""
        return {
            "model": type(self.model).__name__,
            "parameters": self.dim,
            "dataset": self.data.name,
            "train_size": self.train_size,
            "estimation_size": self.estimation_size,
            "batch_size": self.batch_size,
            "noise": self.noise,
            "sigma": self.sigma,
            "variance": self.variance,
            "projections": self.projections,
            "sampling": self.sampling,
            "sign_samples": self.sign_samples,
        }

    def x0(self, seed: int = 0, dtype: torch.dtype = torch.float32) -> Tensor:
        """Initial parameters ``(d,)``: the model's own initialisers, drawn with ``seed``."""
        model = copy.deepcopy(self.model)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for module in model.modules():
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()
        return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).to(dtype)

    def _projection_generator(self, x: Tensor) -> torch.Generator:
        """A generator seeded by ``x``'s bytes and ``seed``: the projections, and so the
        variance estimate, are a function of ``x`` alone (a resumed run draws the same)."""
        digest = zlib.crc32(x.detach().cpu().numpy().tobytes(), self.seed & 0xFFFFFFFF)
        return torch.Generator(device=x.device).manual_seed(digest)

    def _data(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(train inputs, train targets, estimation inputs, estimation targets)`` on ``like``'s device."""
        key = (like.dtype, like.device)
        if key not in self._tensors:
            inputs = self.data.inputs.to(device=like.device)
            if inputs.is_floating_point():  # token ids stay integers
                inputs = inputs.to(like.dtype)
            targets = self.data.targets.to(device=like.device)
            if self.data.targets.is_floating_point():
                targets = targets.to(like.dtype)
            index = self._estimation_index.to(like.device)
            self._tensors[key] = (inputs, targets, inputs[index], targets[index])
        return self._tensors[key]

    def _chunks(self) -> list[slice]:
        n = self.estimation_size
        assert n is not None
        size = n if self.chunk_size is None else self.chunk_size
        return [slice(start, min(start + size, n)) for start in range(0, n, size)]

    def _entry(self, x: Tensor) -> _Evaluation:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ProblemError(f"x must have shape (paths, {self.dim}), got {tuple(x.shape)}")
        return _Evaluation(x=x)

    # --------------------------------------------------------- weighted-loss passes

    def _weighted_gradients(self, entry: _Evaluation, cotangents: list[Tensor]) -> list[Tensor]:
        """``∇_x Σ_n c_n ℓ_n(x)`` per path for each cotangent ``c`` of shape ``(P, n)``.

        One forward pass (kept for the next call at the same ``x``) and one backward
        pass per cotangent.  With ``chunk_size`` set the graph is rebuilt per chunk.
        """
        x = entry.x
        _, _, inputs, targets = self._data(x)
        chunks = self._chunks()
        results = [torch.zeros_like(x) for _ in cotangents]
        with torch.enable_grad():
            for part in chunks:
                if len(chunks) == 1 and entry.losses is not None:
                    leaf, losses = entry.leaf, entry.losses
                else:
                    leaf = x.detach().requires_grad_(True)
                    losses = self._losses_shared(leaf, inputs[part], targets[part])
                    if len(chunks) == 1:
                        entry.leaf, entry.losses = leaf, losses
                        entry.loss = losses.detach().mean(dim=1)
                for result, cotangent in zip(results, cotangents, strict=True):
                    (piece,) = torch.autograd.grad(losses, leaf, cotangent[:, part], retain_graph=True)
                    result += piece
        return results

    def _centred_projection(self, entry: _Evaluation, z: Tensor, weighted: Tensor | None = None) -> Tensor:
        """``n^{-1/2} Σ_n z_n (∇ℓ_n − ∇f)`` for ``z`` of shape ``(P, n)``: covariance ``C``.

        ``weighted``, where given, is ``Σ_n z_n ∇ℓ_n`` already summed from per-example gradients;
        else one weighted-loss backward pass computes it."""
        gradient = self._full_gradient(entry)
        scale = 1.0 / math.sqrt(self.estimation_size)  # type: ignore[arg-type]
        if weighted is None:
            (weighted,) = self._weighted_gradients(entry, [z * scale])
        else:
            weighted = weighted * scale
        return weighted - (z.sum(dim=1, keepdim=True) * scale) * gradient

    def _full_gradient(self, entry: _Evaluation) -> Tensor:
        if entry.grad is None:
            x = entry.x
            weights = torch.full(
                (x.shape[0], self.estimation_size),
                1.0 / self.estimation_size,  # type: ignore[arg-type]
                dtype=x.dtype,
                device=x.device,
            )
            (entry.grad,) = self._weighted_gradients(entry, [weights])
        return entry.grad

    # --------------------------------------------------------------- diag C

    def _linear_only(self) -> list[nn.Linear] | None:
        """The model's ``nn.Linear`` layers if they hold every parameter (an MLP), else None."""
        layers = [m for m in self.model.modules() if isinstance(m, nn.Linear)]
        owned = {id(p) for m in layers for p in m.parameters(recurse=False)}
        if not layers or any(id(p) not in owned for p in self.model.parameters()):
            return None
        return layers

    def _linear_moments(
        self, entry: _Evaluation, layers: list[nn.Linear], z: Tensor | None = None
    ) -> Tensor | None:
        """Exact ``diag C`` of a model made of ``nn.Linear`` layers without per-example gradients.

        A linear layer applied once per example has per-example gradients
        ``δ_n a_nᵀ`` (weight) and ``δ_n`` (bias), with ``a_n`` its input and ``δ_n`` the
        gradient of ``Σ_m ℓ_m`` with respect to its output, so
        ``Σ_n (∇ℓ_n)² = (δ²)ᵀ(a²)``: one forward and one backward pass, batched over paths,
        and one extra product of the size of the gradient's (the layer-wise trick of BackPACK);
        with ``z`` ``(P, n)`` also ``Σ_n z_n ∇ℓ_n = ((z δ)ᵀ a, Σ_n z_n δ_n)`` into ``entry.weighted``.
        ``δ`` is the gradient with respect to a zero added to each layer's output.
        Returns None, to fall back to per-example gradients, where a layer sees
        more than one vector per example or is applied twice.
        """
        x = entry.x
        _, _, inputs, targets = self._data(x)
        names = {id(m): n for n, m in self.model.named_modules()}
        order = {id(layer): k for k, layer in enumerate(layers)}

        def forward(w: Tensor, probes: list[Tensor], inp: Tensor, tgt: Tensor) -> tuple[Tensor, list[Tensor]]:
            seen: dict[int, Tensor] = {}

            def tap(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> Tensor:
                k = order[id(module)]
                if k in seen or args[0].ndim != 2:
                    raise _NotOncePerExample
                seen[k] = args[0]
                return output + probes[k]

            handles = [layer.register_forward_hook(tap) for layer in layers]
            try:
                params = {**self._layout.unflatten(w), **self._buffers}
                losses = self._per_example_loss(functional_call(self.model, params, (inp,)), tgt)
            finally:
                for handle in handles:
                    handle.remove()
            if len(seen) != len(layers):
                raise _NotOncePerExample
            return losses, [seen[k] for k in range(len(layers))]

        batched = vmap(forward, in_dims=(0, 0, None, None))
        # In x's dtype (float64 in the experiments): float64 products would cost more than the
        # optimizer step itself in a float32 run.  In float32, Σ(∇ℓ)²/n − (∇f)² cancels: a coordinate
        # whose mean gradient is k standard deviations keeps a relative error of about 1e-6·(1 + k²).
        wide = x.dtype
        # Σ_n ∇ℓ_n, Σ_n (∇ℓ_n)² and, with z, Σ_n z_n ∇ℓ_n.
        sums = torch.zeros(2 if z is None else 3, *x.shape, dtype=wide, device=x.device)
        with torch.enable_grad():
            for part in self._chunks():
                size = part.stop - part.start
                probes = [
                    torch.zeros(
                        x.shape[0], size, layer.out_features, dtype=x.dtype, device=x.device
                    ).requires_grad_(True)
                    for layer in layers
                ]
                try:
                    losses, activations = batched(x.detach(), probes, inputs[part], targets[part])
                except _NotOncePerExample:
                    return None
                deltas = torch.autograd.grad(losses.sum(), probes)
                moments: dict[str, Tensor] = {}
                for layer, a, delta in zip(layers, activations, deltas, strict=True):
                    a, delta = a.detach().to(wide), delta.to(wide)  # (P, c, in), (P, c, out)
                    name = names[id(layer)]
                    prefix = f"{name}." if name else ""  # a bare nn.Linear is the root module, ""
                    weight = [delta.mT @ a, (delta**2).mT @ a**2]
                    bias = [delta.sum(1), (delta**2).sum(1)]
                    if z is not None:
                        weighted = z[:, part, None].to(wide) * delta
                        weight.append(weighted.mT @ a)
                        bias.append(weighted.sum(1))
                    moments[f"{prefix}weight"] = torch.stack(weight)
                    if layer.bias is not None:
                        moments[f"{prefix}bias"] = torch.stack(bias)
                sums += self._layout.flatten(moments, 2)
        mean, square = sums[:2] / self.estimation_size  # type: ignore[operator]
        if z is not None:
            entry.weighted = sums[2].to(x.dtype)
        if entry.grad is None:
            entry.grad = mean.to(x.dtype)
        return (square - mean**2).clamp_min(0.0).to(x.dtype)

    def _per_example_variance(self, entry: _Evaluation, z: Tensor | None = None) -> Tensor:
        """Exact ``diag C`` from per-example gradients, merged over chunks (Chan et al.); with
        ``z`` ``(P, n)`` also ``Σ_n z_n ∇ℓ_n`` into ``entry.weighted`` from the same gradients."""
        x = entry.x
        _, _, inputs, targets = self._data(x)
        paths, n = x.shape[0], self.estimation_size
        assert n is not None
        chunk = max(1, min(n, PER_EXAMPLE_CHUNK, PER_EXAMPLE_BUDGET // max(1, paths * self.dim)))
        if self.chunk_size is not None:
            chunk = min(chunk, self.chunk_size)
        params = self._layout.unflatten(x.detach())
        count, mean, m2 = 0, torch.zeros_like(x), torch.zeros_like(x)
        weighted = None if z is None else torch.zeros_like(x)
        with torch.enable_grad():
            for start in range(0, n, chunk):
                part = slice(start, min(start + chunk, n))
                size = part.stop - part.start
                grads = self._example_grads(params, inputs[part], targets[part])  # {name: (P, c, ...)}
                # Reduce over examples per parameter tensor: (P, c, d) is never concatenated.
                means = {name: g.mean(dim=1) for name, g in grads.items()}
                part_mean = self._layout.flatten(means, 1)
                part_m2 = self._layout.flatten(
                    {name: ((g - means[name][:, None]) ** 2).sum(dim=1) for name, g in grads.items()}, 1
                )
                if weighted is not None:
                    w = z[:, part]  # type: ignore[index]
                    weighted += self._layout.flatten(
                        {name: torch.einsum("pc,pc...->p...", w, g) for name, g in grads.items()}, 1
                    )
                del grads
                delta = part_mean - mean
                total = count + size
                mean = mean + delta * (size / total)
                m2 = m2 + part_m2 + delta**2 * (count * size / total)
                count = total
        if entry.grad is None:
            entry.grad = mean
        entry.weighted = weighted
        return m2 / count

    def _projected_variance(self, entry: _Evaluation) -> Tensor:
        """Unbiased ``diag C``: the mean of ``ξ²`` over ``projections`` weighted-loss samples."""
        x = entry.x
        generator = self._projection_generator(x)
        total = torch.zeros_like(x)
        for _ in range(self.projections):
            z = torch.randn(
                x.shape[0],
                self.estimation_size,
                generator=generator,  # type: ignore[arg-type]
                dtype=x.dtype,
                device=x.device,
            )
            total += self._centred_projection(entry, z) ** 2
        return total / self.projections

    def _example_variance(self, entry: _Evaluation, z: Tensor | None = None) -> Tensor:
        """``diag C`` at ``entry.x``, once; with ``z`` (exact path only) ``Σ_n z_n ∇ℓ_n`` from the
        same per-example gradients, so the step's noise needs no pass of its own."""
        if entry.variance is None:
            if self.variance == "per-example":
                layers = self._linear_only() if self.fast_linear else None
                variance = None if layers is None else self._linear_moments(entry, layers, z)
                entry.variance = self._per_example_variance(entry, z) if variance is None else variance
            else:
                entry.variance = self._projected_variance(entry)
        return entry.variance

    def example_variance(self, x: Tensor) -> Tensor:
        """``diag C(x)``, the per-example gradient variance (not divided by ``B``)."""
        return self._example_variance(self._entry(x))

    def example_statistics(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(∇f(x), diag C(x))`` from one evaluation (on the exact path, one pass over
        per-example gradients); what the gradient noise scale ``tr C / |∇f|²`` needs."""
        entry = self._entry(x)
        variance = self._example_variance(entry)
        return self._full_gradient(entry), variance

    # ------------------------------------------------------------ GradientOracle

    def loss(self, x: Tensor) -> Tensor:
        """``f(x)`` on the estimation set, per path: ``(P,)``."""
        entry = self._entry(x)
        if entry.loss is None:
            _, _, inputs, targets = self._data(x)
            with torch.no_grad():
                total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
                for part in self._chunks():
                    total += self._losses_shared(x, inputs[part], targets[part]).sum(dim=1)
            entry.loss = total / self.estimation_size  # type: ignore[operator]
        return entry.loss

    compilable = False
    """Minibatches are drawn as indices, and per-example statistics run Python loops."""

    def grad(self, x: Tensor) -> Tensor:
        """``∇f(x)`` on the estimation set: ``(P, d)``."""
        return self._full_gradient(self._entry(x))

    def _noise_variance(self, entry: _Evaluation) -> Tensor:
        if self.noise == "synthetic":
            return torch.full_like(entry.x, self.sigma**2 / self.batch_size)  # type: ignore[operator]
        return self._example_variance(entry) * self.covariance_factor

    def noise_variance(self, x: Tensor) -> Tensor:
        """``diag Σ_B(x)``: ``diag C · factor`` (minibatch) or ``σ²/B`` (synthetic)."""
        return self._noise_variance(self._entry(x))

    def noise_scale(self, x: Tensor) -> Tensor:
        return self.noise_variance(x).sqrt()

    def _gaussian_noise(self, entry: _Evaluation, random: RandomSource, fused: bool = False) -> Tensor:
        """``Σ_B^{1/2} ξ``; ``fused``: ``diag C`` is still to be computed exactly at ``x``, so the
        sample's ``Σ_n z_n ∇ℓ_n`` comes from that same per-example pass (docs/theory.md §4)."""
        x = entry.x
        if self.noise == "synthetic":
            return self._noise_variance(entry).sqrt() * random.normal(tuple(x.shape), x)
        z = random.normal((x.shape[0], self.estimation_size), x)  # type: ignore[arg-type]
        if fused:
            self._example_variance(entry, z)
        return self._centred_projection(entry, z, entry.weighted) * math.sqrt(self.covariance_factor)

    def gaussian_noise(self, x: Tensor, random: RandomSource | torch.Generator | None) -> Tensor:
        """A sample of ``N(0, Σ_B(x))`` through the randomly weighted loss (docs/theory.md §4)."""
        return self._gaussian_noise(self._entry(x), as_source(random))

    def _expected_sign(self, entry: _Evaluation, random: RandomSource | None = None) -> Tensor:
        if self.sign_samples:
            x, k = entry.x, self.sign_samples
            source = as_source(self._projection_generator(x)) if random is None else random
            signs = torch.sign(self.sample_gradient(x.repeat_interleave(k, dim=0), source))
            return signs.reshape(x.shape[0], k, -1).mean(dim=1)
        # diag C first: its per-example pass leaves ∇f in the entry, so no second pass computes it.
        scale = self._noise_variance(entry).sqrt()
        gradient = self._full_gradient(entry)
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        return torch.where(scale > 0, torch.erf(gradient / (math.sqrt(2.0) * safe)), torch.sign(gradient))

    def expected_sign(self, x: Tensor) -> Tensor:
        """``erf(∇f/(√2 s))``, the Gaussian form (docs/theory.md §3, Cor 3.3); ``sign ∇f`` where ``s = 0``.
        With ``sign_samples = K``: the mean sign of ``K`` minibatch gradients per path (Thm 3.2),
        drawn from a stream fixed by ``x``."""
        return self._expected_sign(self._entry(x))

    def evaluate(self, x: Tensor, needs: frozenset[str], random: RandomSource) -> Evaluation:
        """One forward pass, ``∇f`` and ``diag C`` at ``x``, shared by everything ``needs`` asks."""
        entry = self._entry(x)
        # A step that needs the exact diag C and a noise sample gets both (and ∇f) from one pass
        # over per-example gradients: the noise's Σ_n z_n ∇ℓ_n is one more reduction of them.
        fused = (
            "noise" in needs
            and bool(needs & {"variance", "scale", "expected_sign"})
            and self.noise == "minibatch"
            and self.variance == "per-example"
        )
        noise = self._gaussian_noise(entry, random, fused) if "noise" in needs else None
        variance = self._noise_variance(entry) if needs & {"variance", "scale"} else None
        return Evaluation(
            grad=self._full_gradient(entry) if "grad" in needs else None,
            variance=variance,
            scale=variance.sqrt() if variance is not None and "scale" in needs else None,
            expected_sign=self._expected_sign(entry, random) if "expected_sign" in needs else None,
            noise=noise,
        )

    def sample_gradient(self, x: Tensor, random: RandomSource | torch.Generator | None) -> Tensor:
        """What the optimizer sees: each path's own minibatch gradient (or ``∇f`` + synthetic noise)."""
        source = as_source(random)
        if self.noise == "synthetic":
            return self.grad(x) + self.gaussian_noise(x, source)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ProblemError(f"x must have shape (paths, {self.dim}), got {tuple(x.shape)}")
        inputs, targets, _, _ = self._data(x)
        index = self.minibatch_indices(x.shape[0], source, x.device)
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            losses = self._losses_own(leaf, inputs[index], targets[index]).mean(dim=1)
            (gradient,) = torch.autograd.grad(losses.sum(), leaf)
        return gradient

    def minibatch_indices(
        self, paths: int, random: RandomSource | torch.Generator | None, device: torch.device | str = "cpu"
    ) -> Tensor:
        """``(paths, B)`` training-set indices, an independent minibatch per path."""
        source, n_train = as_source(random), len(self.data)
        if self.sampling == "with-replacement":
            return source.integers(n_train, (paths, self.batch_size), torch.device(device))
        keys = source.uniform((paths, n_train), torch.empty((), dtype=torch.float32, device=device))
        return keys.topk(self.batch_size, dim=1).indices

    def sampled_signs(self, x: Tensor, samples: int, random: RandomSource | torch.Generator | None) -> Tensor:
        """``sign`` of ``samples`` stochastic gradients at one point ``x`` ``(d,)``: ``(samples, d)``.

        Their mean estimates the true ``E sign ∇f_γ(x)`` (paper Thm 3.2) of the noise the
        optimizer sees, against which the Gaussian form :meth:`expected_sign` can be checked.
        """
        return torch.sign(self.sample_gradient(x.reshape(1, -1).expand(samples, -1), random))

    # ------------------------------------------------------------------ κ

    def curvature(self, x: Tensor | None = None, samples: int = 16, seed: int = 0) -> Tensor:
        """Hutchinson's estimate ``E[v ⊙ Hv]`` (Rademacher ``v``) of the Hessian diagonal ``(d,)``
        of ``f`` at ``x`` (one parameter vector; default ``x0(seed)``).

        An estimate, unlike the analytic problems' exact curvature: its error per
        coordinate is ``O(‖H_{i,·}‖ / √samples)``.
        """
        point = self.x0(seed) if x is None else x.reshape(-1)
        _, _, inputs, targets = self._data(point)
        generator = torch.Generator(device=point.device).manual_seed(seed)
        estimate = torch.zeros_like(point)
        with torch.enable_grad():
            leaf = point.detach().requires_grad_(True)
            f = self._losses_shared(leaf[None], inputs, targets).mean()
            (gradient,) = torch.autograd.grad(f, leaf, create_graph=True)
            for _ in range(samples):
                probe = torch.randint(0, 2, point.shape, generator=generator, device=point.device)
                probe = probe.to(point.dtype) * 2 - 1
                (hvp,) = torch.autograd.grad(gradient, leaf, probe, retain_graph=True)
                estimate += probe * hvp
        return estimate / samples

    def kappa_profile(self, lr: float, x: Tensor | None = None, samples: int = 16) -> dict[str, float]:
        """``η |h_i| / s_i`` over the coordinates with noise, at ``x`` (default ``x0``): its
        maximum (docs/theory.md §3's κ), 99th percentile and median.

        A network has coordinates whose noise all but vanishes (units that few
        examples reach), so the maximum says little about the bulk; ``h`` is
        Hutchinson's estimate (:meth:`curvature`), so all three are estimates.
        """
        point = self.x0() if x is None else x.reshape(-1)
        h = self.curvature(point, samples=samples).abs()
        s = self.noise_scale(point[None])[0]
        noisy = s > 0
        if not bool(noisy.any()):
            return {"max": math.inf, "q99": math.inf, "median": math.inf}
        ratio = (lr * h[noisy] / s[noisy]).double()
        return {
            "max": float(ratio.max()),
            "q99": float(torch.quantile(ratio, 0.99)),
            "median": float(ratio.median()),
        }

    def kappa(self, lr: float, x: Tensor | None = None, samples: int = 16) -> float:
        """docs/theory.md §3's ``κ = η · max_i |h_i| / s_i`` at ``x`` (default ``x0``), over coordinates with
        noise; see :meth:`kappa_profile` for the bulk of the coordinates."""
        return self.kappa_profile(lr, x, samples)["max"]


def network_problem(
    model: str = "mlp",
    dataset: str = "breast-cancer",
    *,
    width: int | None = None,
    train_size: int | None = None,
    batch_size: int = 32,
    loss: str = "cross-entropy",
    estimation_size: int | None = None,
    noise: str = "minibatch",
    sigma: float | None = None,
    variance: str = "per-example",
    projections: int = 1,
    sampling: str = "without-replacement",
    chunk_size: int | None = None,
    data_dir: str | None = None,
    download: bool = False,
    seed: int = 0,
    sign_samples: int = 0,
) -> NetworkProblem:
    """A :class:`NetworkProblem` from names: architecture ``model`` on data set ``dataset``."""
    data = load_dataset(dataset, train_size=train_size, seed=seed, root=data_dir, download=download)
    net = build_model(model, data.input_shape, data.num_classes, width=width, seed=seed)
    return NetworkProblem(
        model=net,
        data=data,
        batch_size=batch_size,
        loss_fn=loss,
        estimation_size=estimation_size,
        noise=noise,
        sigma=sigma,
        variance=variance,
        projections=projections,
        sampling=sampling,
        chunk_size=chunk_size,
        seed=seed,
        sign_samples=sign_samples,
    )
