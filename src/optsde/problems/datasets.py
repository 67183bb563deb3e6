"""Data sets for the network problems (docs/theory.md §7 items 1 and 4).

Built in, no network needed: scikit-learn's breast-cancer table (569 × 30,
binary) and its digits images (1797 × 1 × 8 × 8, ten classes; the default image
set).  MNIST and CIFAR-10 come through torchvision, an optional dependency,
from a data directory; they are downloaded only when asked (``download=True``).

Every data set is a fixed training subset of ``train_size`` examples drawn with
``seed`` (deterministic), with standardised inputs: per feature for tables, per
channel for images, with the subset's own statistics.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from optsde.errors import OptsdeError


class DatasetError(OptsdeError):
    """A data set cannot be loaded; the message says how to get it."""


DEFAULT_DATA_DIR = Path(os.environ.get("OPTSDE_DATA", "~/.cache/optsde/data")).expanduser()
"""Where MNIST and CIFAR-10 are looked for and downloaded to: ``$OPTSDE_DATA``, else
``~/.cache/optsde/data``."""


@dataclass(frozen=True)
class Dataset:
    """A classification training set held in memory.

    ``inputs``: ``(N, features)`` for tables, ``(N, C, H, W)`` for images (float32,
    standardised); ``targets``: ``(N,)`` class indices (int64).
    """

    name: str
    inputs: Tensor
    targets: Tensor
    num_classes: int

    def __post_init__(self) -> None:
        if self.inputs.shape[0] != self.targets.shape[0]:
            raise DatasetError(
                f"{self.name}: {self.inputs.shape[0]} inputs but {self.targets.shape[0]} targets"
            )

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example: ``(features,)`` or ``(C, H, W)``."""
        return tuple(self.inputs.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.inputs.ndim == 4


def _subset(n_total: int, train_size: int | None, seed: int, name: str) -> np.ndarray:
    """Indices of a deterministic random subset of ``train_size`` out of ``n_total`` examples."""
    if train_size is None:
        train_size = n_total
    if not 1 <= train_size <= n_total:
        raise DatasetError(
            f"{name} has {n_total} examples; train_size must lie in [1, {n_total}], got {train_size}"
        )
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(n_total)[:train_size])


def _standardise(inputs: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Zero mean and unit variance over ``axes``; constant features are only centred."""
    mean = inputs.mean(axis=axes, keepdims=True)
    std = inputs.std(axis=axes, keepdims=True)
    return (inputs - mean) / np.where(std > 0, std, 1.0)


def _finish(name: str, inputs: np.ndarray, targets: np.ndarray, num_classes: int, image: bool) -> Dataset:
    axes = (0, 2, 3) if image else (0,)
    inputs = _standardise(inputs.astype(np.float64), axes)
    return Dataset(
        name=name,
        inputs=torch.as_tensor(inputs, dtype=torch.float32),
        targets=torch.as_tensor(targets, dtype=torch.int64),
        num_classes=num_classes,
    )


def breast_cancer(train_size: int | None = None, seed: int = 0) -> Dataset:
    """scikit-learn's Wisconsin breast-cancer table: 569 examples, 30 features, 2 classes."""
    from sklearn.datasets import load_breast_cancer

    raw = load_breast_cancer()
    keep = _subset(len(raw.target), train_size, seed, "breast-cancer")
    return _finish("breast-cancer", raw.data[keep], raw.target[keep], 2, image=False)


def digits(train_size: int | None = None, seed: int = 0) -> Dataset:
    """scikit-learn's handwritten digits: 1797 images of 1 × 8 × 8, 10 classes."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    keep = _subset(len(raw.target), train_size, seed, "digits")
    images = raw.images[keep].reshape(-1, 1, 8, 8)
    return _finish("digits", images, raw.target[keep], 10, image=True)


def _torchvision_dataset(name: str, root: Path, download: bool):  # -> torchvision dataset
    try:
        import torchvision  # noqa: F401
        from torchvision import datasets as tv
    except ImportError:
        raise DatasetError(
            f"{name} needs torchvision: pip install 'optsde[vision]' (or use the built-in dataset=digits)"
        ) from None
    cls = {"mnist": tv.MNIST, "cifar10": tv.CIFAR10}[name]
    try:
        return cls(str(root), train=True, download=download)
    except RuntimeError:  # torchvision's "Dataset not found or corrupted"
        label = {"mnist": "MNIST", "cifar10": "CIFAR-10"}[name]
        raise DatasetError(
            f"{label} not found under {root}: pass --set download=true, or put {label} there "
            f"(torchvision layout), or set data_dir"
        ) from None


def mnist(
    train_size: int | None = None, seed: int = 0, root: Path | str | None = None, download: bool = False
) -> Dataset:
    """MNIST's training set through torchvision: 1 × 28 × 28 images, 10 classes."""
    root = DEFAULT_DATA_DIR if root is None else Path(root).expanduser()
    raw = _torchvision_dataset("mnist", root, download)
    data = np.asarray(raw.data, dtype=np.float64)  # (60000, 28, 28) uint8 → float
    targets = np.asarray(raw.targets)
    keep = _subset(len(targets), train_size, seed, "mnist")
    return _finish("mnist", data[keep].reshape(-1, 1, 28, 28) / 255.0, targets[keep], 10, image=True)


def cifar10(
    train_size: int | None = None, seed: int = 0, root: Path | str | None = None, download: bool = False
) -> Dataset:
    """CIFAR-10's training set through torchvision: 3 × 32 × 32 images, 10 classes."""
    root = DEFAULT_DATA_DIR if root is None else Path(root).expanduser()
    raw = _torchvision_dataset("cifar10", root, download)
    targets = np.asarray(raw.targets)
    keep = _subset(len(targets), train_size, seed, "cifar10")
    images = np.asarray(raw.data[keep], dtype=np.float64).transpose(0, 3, 1, 2) / 255.0  # NHWC → NCHW
    return _finish("cifar10", images, targets[keep], 10, image=True)


DATASETS = {
    "breast-cancer": breast_cancer,
    "digits": digits,
    "mnist": mnist,
    "cifar10": cifar10,
}
"""Name → loader.  ``breast-cancer`` and ``digits`` ship with scikit-learn."""


def load_dataset(
    name: str,
    *,
    train_size: int | None = None,
    seed: int = 0,
    root: Path | str | None = None,
    download: bool = False,
) -> Dataset:
    """The data set called ``name`` (see :data:`DATASETS`), a subset of ``train_size`` examples.

    ``root`` and ``download`` matter only for ``mnist`` and ``cifar10``; nothing is
    downloaded unless ``download`` is true.
    """
    compact = {known.replace("-", ""): known for known in DATASETS}
    key = compact.get(name.lower().replace("-", "").replace("_", ""))
    if key is None:
        raise DatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if key in ("mnist", "cifar10"):
        return DATASETS[key](train_size, seed, root=root, download=download)
    return DATASETS[key](train_size, seed)
