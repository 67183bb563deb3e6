"""Small networks for the network experiments (docs/theory.md §7 items 1 and 4).

An MLP for tables, and for images a CNN, a Transformer on patch tokens
(ViT-style) and a ResNet.  The defaults give a few thousand parameters so that
many paths run quickly on a CPU; ``width`` scales them up.

Every model is a plain ``nn.Module`` used functionally by
:class:`~optsde.problems.network.NetworkProblem` (``torch.func.functional_call``
under ``vmap`` over paths and over examples), so the models avoid what those
transforms cannot batch: no BatchNorm or other running statistics, no in-place
updates of their inputs, no data-dependent control flow.  Normalisation, where
there is any, is per example (LayerNorm, GroupNorm), so per-example gradients
stay well defined.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optsde.errors import OptsdeError


class ModelError(OptsdeError):
    """A model cannot be built for the data; the message says what to change."""


class MLP(nn.Module):
    """``depth`` hidden layers of ``width`` ReLU units, then a linear read-out."""

    def __init__(self, in_features: int, num_classes: int, width: int = 32, depth: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        size = in_features
        for _ in range(depth):
            layers += [nn.Linear(size, width), nn.ReLU()]
            size = width
        layers.append(nn.Linear(size, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, inputs: Tensor) -> Tensor:
        return self.net(inputs.flatten(1))


class CNN(nn.Module):
    """Two 3×3 convolutions (``width``, ``2·width`` channels) with ReLU and pooling, then linear."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.head = nn.Linear(2 * width * 4, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        h = F.avg_pool2d(F.relu(self.conv1(images)), 2)
        h = F.adaptive_avg_pool2d(F.relu(self.conv2(h)), 2)
        return self.head(h.flatten(1))


class _Block(nn.Module):
    """Pre-norm Transformer block: self-attention and an MLP, each with a residual."""

    def __init__(self, width: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        if width % heads:
            raise ModelError(f"Transformer width {width} is not divisible by heads={heads}")
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, mlp_ratio * width)
        self.fc2 = nn.Linear(mlp_ratio * width, width)

    def forward(self, tokens: Tensor) -> Tensor:
        batch, length, width = tokens.shape
        head_dim = width // self.heads
        q, k, v = self.qkv(self.norm1(tokens)).chunk(3, dim=-1)
        q, k, v = (t.reshape(batch, length, self.heads, head_dim).transpose(1, 2) for t in (q, k, v))
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(head_dim), dim=-1)
        attended = (weights @ v).transpose(1, 2).reshape(batch, length, width)
        tokens = tokens + self.proj(attended)
        return tokens + self.fc2(F.gelu(self.fc1(self.norm2(tokens))))


class Transformer(nn.Module):
    """ViT-style: non-overlapping ``patch × patch`` tokens, learned positions, ``depth`` blocks,
    mean pooling over tokens, a linear head."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        num_classes: int,
        width: int = 16,
        depth: int = 1,
        heads: int = 2,
        patch: int | None = None,
        mlp_ratio: int = 2,
    ) -> None:
        super().__init__()
        channels, height, width_px = image_shape
        patch = patch if patch is not None else max(1, height // 4)
        if height % patch or width_px % patch:
            raise ModelError(f"patch size {patch} does not divide the {height}×{width_px} images")
        self.patch = patch
        tokens = (height // patch) * (width_px // patch)
        self.embed = nn.Linear(channels * patch * patch, width)
        self.position = nn.Parameter(0.02 * torch.randn(tokens, width))
        self.blocks = nn.Sequential(*[_Block(width, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def reset_parameters(self) -> None:
        nn.init.normal_(self.position, std=0.02)

    def forward(self, images: Tensor) -> Tensor:
        p = self.patch
        # (B, C, H, W) → (B, tokens, C·p·p), patches in row-major order.
        patches = F.unfold(images, kernel_size=p, stride=p).transpose(1, 2)
        tokens = self.embed(patches) + self.position
        tokens = self.blocks(tokens)
        return self.head(self.norm(tokens).mean(dim=1))


class _Residual(nn.Module):
    """``relu(x + conv(relu(conv(x))))``, with a strided 1×1 shortcut where the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)
        self.norm1 = nn.GroupNorm(groups, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, 1, stride=stride)
            if stride != 1 or in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, h: Tensor) -> Tensor:
        out = self.norm2(self.conv2(F.relu(self.norm1(self.conv1(h)))))
        return F.relu(self.shortcut(h) + out)


class ResNet(nn.Module):
    """A 3×3 stem, one residual block at ``width`` channels and one strided block at
    ``2·width``, global average pooling, a linear head.  GroupNorm instead of
    BatchNorm keeps every example's loss a function of that example alone."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 8, groups: int = 2) -> None:
        super().__init__()
        groups = math.gcd(groups, width)
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.block1 = _Residual(width, width, stride=1, groups=groups)
        self.block2 = _Residual(width, 2 * width, stride=2, groups=groups)
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        h = F.relu(self.stem(images))
        h = self.block2(self.block1(h))
        return self.head(h.mean(dim=(2, 3)))


ARCHITECTURES = ("mlp", "cnn", "transformer", "resnet")


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    width: int | None = None,
    seed: int = 0,
) -> nn.Module:
    """The architecture ``name`` (one of :data:`ARCHITECTURES`) for inputs of ``input_shape``.

    ``width`` defaults to the quick-mode size (MLP 32, CNN 8, Transformer 16,
    ResNet 8); the initial weights are fixed by ``seed``.
    """
    key = name.lower()
    aliases = {"vit": "transformer", "convnet": "cnn"}
    key = aliases.get(key, key)
    if key not in ARCHITECTURES:
        raise ModelError(f"unknown model {name!r}; choose one of: {', '.join(ARCHITECTURES)}")
    if width is not None and width < 1:
        raise ModelError(f"model width must be a positive integer, got {width}")
    image = len(input_shape) == 3
    if key != "mlp" and not image:
        raise ModelError(
            f"{key} needs image inputs (C, H, W), got examples of shape {input_shape}; "
            f"use model=mlp for tables"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if key == "mlp":
            return MLP(math.prod(input_shape), num_classes, width=width or 32)
        if key == "cnn":
            return CNN(input_shape[0], num_classes, width=width or 8)
        if key == "transformer":
            return Transformer(input_shape, num_classes, width=width or 16)  # type: ignore[arg-type]
        return ResNet(input_shape[0], num_classes, width=width or 8)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
