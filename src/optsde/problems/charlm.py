"""A tiny GPT-style character-level language model and an offline corpus for it.

The corpus is the Python standard library's own source, read at run time from the
directory of ``os.__file__``: nothing is downloaded, and the same installation gives
the same text.  Files are taken in sorted order of their relative paths (tests,
private modules and ``site-packages`` left out, so installed packages never change
it); every ``eval_every``-th file is held out for evaluation, so the evaluation loss
is measured on modules the model never trained on.  Characters are ASCII codes
(anything else becomes ``?``): a fixed vocabulary of 128, no tokenizer to fit.

The model is GPT-2's layout at toy size: token and position embeddings, pre-norm
blocks of causal self-attention and a 4× GELU MLP, a final LayerNorm, and an output
layer tied to the token embedding.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optsde.errors import OptsdeError
from optsde.optimizers.base import DiscreteOptimizer, Hyperparameters, State
from optsde.randomness import RandomSource, as_source

VOCAB_SIZE = 128
"""ASCII."""

EXCLUDED_PARTS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test"})


class CorpusError(OptsdeError):
    """The offline corpus cannot be built here; the message says why."""


@dataclass(frozen=True)
class Corpus:
    """Token ids of the training and the held-out split, and where they came from."""

    train: Tensor
    eval: Tensor
    root: str
    train_files: tuple[str, ...]
    eval_files: tuple[str, ...]

    def describe(self) -> dict[str, object]:
        """What a report needs to say which text this was (a digest, not the file list)."""
        digest = hashlib.sha256("\n".join((*self.train_files, "|", *self.eval_files)).encode()).hexdigest()
        return {
            "source": self.root,
            "train_characters": int(self.train.numel()),
            "eval_characters": int(self.eval.numel()),
            "train_files": len(self.train_files),
            "eval_files": len(self.eval_files),
            "file_list_sha256": digest[:16],
        }


def encode(text: str) -> Tensor:
    """ASCII codes of ``text`` as a ``uint8`` tensor (other characters become ``?``)."""
    return torch.frombuffer(bytearray(text.encode("ascii", errors="replace")), dtype=torch.uint8).clone()


def stdlib_files(root: Path) -> list[Path]:
    """The corpus files under ``root``, sorted by relative path (deterministic for one installation)."""
    files = []
    for directory, subdirs, names in os.walk(root):
        # Pruned in place, so site-packages (thousands of installed files) is never walked.
        subdirs[:] = [d for d in subdirs if d not in EXCLUDED_PARTS and not d.startswith(("_", "."))]
        for name in names:
            if name.endswith(".py") and (name == "__init__.py" or not name.startswith("_")):
                files.append(Path(directory, name))
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def stdlib_corpus(train_chars: int, eval_chars: int, eval_every: int = 10) -> Corpus:
    """The standard library's source: up to ``train_chars`` characters for training, ``eval_chars`` held out.

    Every ``eval_every``-th file (in sorted order) goes to the held-out split.
    """
    if train_chars < 1 or eval_chars < 1 or eval_every < 2:
        raise CorpusError("need train_chars ≥ 1, eval_chars ≥ 1 and eval_every ≥ 2")
    root = Path(os.path.dirname(os.__file__))
    files = stdlib_files(root)
    if len(files) < eval_every:
        raise CorpusError(f"found only {len(files)} Python source files under {root}; the corpus needs more")
    texts: dict[str, list[str]] = {"train": [], "eval": []}
    names: dict[str, list[str]] = {"train": [], "eval": []}
    budget = {"train": train_chars, "eval": eval_chars}
    for index, path in enumerate(files):
        split = "eval" if index % eval_every == eval_every - 1 else "train"
        if budget[split] <= 0:
            if all(left <= 0 for left in budget.values()):
                break
            continue
        text = path.read_text(encoding="utf-8", errors="replace")[: budget[split]]
        texts[split].append(text)
        names[split].append(path.relative_to(root).as_posix())
        budget[split] -= len(text)
    train, held_out = encode("".join(texts["train"])), encode("".join(texts["eval"]))
    return Corpus(train, held_out, str(root), tuple(names["train"]), tuple(names["eval"]))


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise CorpusError(f"the model width {width} must be a multiple of the number of heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, h: Tensor) -> Tensor:
        batch, length, width = h.shape
        q, k, v = self.qkv(h).split(width, dim=-1)
        q, k, v = (t.view(batch, length, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(out.transpose(1, 2).reshape(batch, length, width))


class Block(nn.Module):
    """Pre-norm transformer block: ``h + attn(LN h)``, then ``h + MLP(LN h)``."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, h: Tensor) -> Tensor:
        h = h + self.attn(self.norm1(h))
        return h + self.mlp(self.norm2(h))


class TinyGPT(nn.Module):
    """A character-level GPT: ``(batch, length)`` token ids ↦ ``(batch, length, 128)`` logits."""

    def __init__(self, context: int, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.context = context
        self.token = nn.Embedding(VOCAB_SIZE, width)
        self.position = nn.Parameter(torch.zeros(context, width))
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, VOCAB_SIZE, bias=False)
        self.head.weight = self.token.weight  # tied, as in GPT-2
        self.reset_parameters(layers)

    def reset_parameters(self, layers: int) -> None:
        """GPT-2's initialisation: N(0, 0.02), residual projections scaled by 1/√(2·layers)."""
        for name, param in self.named_parameters():
            if param.dim() >= 2:
                std = 0.02 / (2 * layers) ** 0.5 if name.endswith(("proj.weight", "mlp.2.weight")) else 0.02
                nn.init.normal_(param, 0.0, std)
            elif "norm" not in name:
                nn.init.zeros_(param)

    def forward(self, tokens: Tensor) -> Tensor:
        h = self.token(tokens) + self.position[: tokens.shape[1]]
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h))


def next_character_loss(model: TinyGPT, windows: Tensor) -> Tensor:
    """Mean cross-entropy (nats per character) of predicting ``windows[:, 1:]`` from ``windows[:, :-1]``."""
    logits = model(windows[:, :-1])
    return F.cross_entropy(logits.reshape(-1, VOCAB_SIZE), windows[:, 1:].reshape(-1))


def random_windows(tokens: Tensor, batch: int, context: int, generator: torch.Generator) -> Tensor:
    """``batch`` windows of ``context + 1`` consecutive characters at uniformly random offsets."""
    starts = torch.randint(
        0, tokens.numel() - context, (batch,), generator=generator, device=generator.device
    ).to(tokens.device)
    return tokens[starts[:, None] + torch.arange(context + 1, device=tokens.device)].long()


def evenly_spaced_windows(tokens: Tensor, count: int, context: int) -> Tensor:
    """``count`` fixed windows spread evenly over ``tokens``: the same evaluation set for every run."""
    if tokens.numel() <= context + 1:
        raise CorpusError(f"the held-out text has {tokens.numel()} characters, fewer than one window")
    starts = torch.linspace(0, tokens.numel() - context - 1, count, device=tokens.device).long()
    return tokens[starts[:, None] + torch.arange(context + 1, device=tokens.device)].long()


@torch.no_grad()
def evaluation_loss(model: TinyGPT, windows: Tensor, chunk: int = 256) -> float:
    """Mean next-character loss over ``windows`` (windows have one length, so chunks weigh equally)."""
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, windows.shape[0], chunk):
        part = windows[start : start + chunk]
        total += float(next_character_loss(model, part)) * part.shape[0]
    model.train(was_training)
    return total / windows.shape[0]


class CharLMError(OptsdeError):
    """A question the char-LM oracle does not answer; the message says what it answers."""


@dataclass
class CharLMOracle:
    """A :class:`TinyGPT` on a corpus as a gradient oracle over flat parameter vectors ``(P, d)``,
    for :func:`optsde.sde.simulate` with a :class:`~optsde.sde.DiscreteRunner` (docs/scaling.md).

    ``sample_gradient``: each path's gradient of the next-character loss on ``batch`` windows of
    ``context + 1`` characters at uniformly random offsets of ``train``, drawn from the source's
    ``integers``.  ``loss``: the held-out loss on the fixed ``eval_windows`` (nats per character).
    It has no noise model (no SDE runs on it), so it refuses the other questions.  Paths are
    evaluated one after the other: each is one training run of the model.
    """

    model: TinyGPT
    train: Tensor
    eval_windows: Tensor
    batch: int
    compilable: bool = False
    dim: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._names = [name for name, _ in self.model.named_parameters()]
        self._shapes = [p.shape for _, p in self.model.named_parameters()]
        self._sizes = [p.numel() for _, p in self.model.named_parameters()]
        self.dim = sum(self._sizes)

    def parameters(self, flat: Tensor) -> dict[str, Tensor]:
        """One path's flat vector ``(d,)`` as the model's named parameters (views)."""
        pieces = flat.split(self._sizes)
        return {n: p.view(s) for n, p, s in zip(self._names, pieces, self._shapes, strict=True)}

    def x0(self, seed: int) -> Tensor:
        """A fresh initialisation (GPT-2's) of the model's shape drawn with ``seed``, flat ``(d,)``."""
        m = self.model
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fresh = TinyGPT(m.context, m.token.embedding_dim, len(m.blocks), m.blocks[0].attn.heads)
        return self.flatten(fresh).to(self.train.device)

    def flatten(self, model: TinyGPT) -> Tensor:
        """``model``'s parameters as one flat vector ``(d,)``, in this oracle's order."""
        return torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def decay_mask(self) -> Tensor:
        """1 on the coordinates of matrices (weights, embeddings, position table), 0 on biases and
        LayerNorm gains: decoupled decay applies to the former only, as in GPT-2 practice."""
        return torch.cat(
            [torch.full((n,), float(len(s) >= 2)) for n, s in zip(self._sizes, self._shapes, strict=True)]
        )

    def _loss_of(self, flat: Tensor, windows: Tensor) -> Tensor:
        logits = torch.func.functional_call(self.model, self.parameters(flat), (windows[:, :-1],))
        return F.cross_entropy(logits.reshape(-1, VOCAB_SIZE), windows[:, 1:].reshape(-1))

    def loss(self, x: Tensor) -> Tensor:
        """Held-out loss per path ``(P,)``, in chunks of 256 windows (equal weights)."""
        out = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        with torch.no_grad():
            for path in range(x.shape[0]):
                for start in range(0, self.eval_windows.shape[0], 256):
                    part = self.eval_windows[start : start + 256]
                    out[path] += self._loss_of(x[path], part) * part.shape[0]
        return out / self.eval_windows.shape[0]

    def sample_gradient(self, x: Tensor, random: RandomSource | torch.Generator | None) -> Tensor:
        """Each path's minibatch gradient ``(P, d)`` on its own ``batch`` random windows."""
        source = as_source(random)
        context = self.model.context
        starts = source.integers(self.train.numel() - context, (x.shape[0], self.batch), self.train.device)
        offsets = torch.arange(context + 1, device=self.train.device)
        gradients = torch.empty_like(x)
        with torch.enable_grad():
            for path in range(x.shape[0]):
                leaf = x[path].detach().requires_grad_(True)
                windows = self.train[starts[path, :, None] + offsets].long()
                (gradients[path],) = torch.autograd.grad(self._loss_of(leaf, windows), leaf)
        return gradients

    def _no_noise_model(self, *_: object) -> Tensor:
        raise CharLMError("the char-LM oracle answers only sample_gradient and loss: no SDE runs on it")

    grad = noise_variance = noise_scale = expected_sign = _no_noise_model
    gaussian_noise = evaluate = _no_noise_model


@dataclass(frozen=True)
class SelectiveDecay:
    """A discrete optimizer with decoupled decay restricted to ``mask`` (1: decayed, 0: exempt).

    ``inner`` applies ``x ← x(1 − ηθ) − η u`` to every coordinate (AdamW, docs/theory.md §2); adding
    ``ηθ x`` back where ``mask`` is 0 gives ``x − η u`` there: torch.optim's parameter groups with
    ``weight_decay = 0`` for biases and gains.
    """

    inner: DiscreteOptimizer
    mask: Tensor

    @property
    def name(self) -> str:
        return self.inner.name

    def init_state(self, x0: Tensor) -> State:
        return self.inner.init_state(x0)

    def step(self, state: State, gradient: Tensor, hp: Hyperparameters, lr: float | Tensor) -> State:
        new = self.inner.step(state, gradient, hp, lr)
        exempt = (1.0 - self.mask).to(state.x)
        return new._replace(x=new.x + (lr * hp.weight_decay) * exempt * state.x)
