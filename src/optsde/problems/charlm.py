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
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optsde.errors import OptsdeError

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
