"""Counter-based noise (docs/simulate.md, "Noise"): Threefry-2x32-20 against its published
known answers, and the normals it yields against the standard normal law.

The statistical checks use fixed keys and ``Z_TOL`` standard errors of the sample moments
under the null hypothesis (exact for normal samples), never tolerances tuned to the output.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from conftest import Z_TOL
from optsde.randomness import (
    Draw,
    NotPresampleable,
    PresampledSource,
    counter_key,
    counter_normal_pairs,
    counter_presample,
    threefry2x32,
)

KNOWN_ANSWERS = [
    # (counter₀, counter₁, key₀, key₁) → (word₀, word₁): Random123's kat_vectors, threefry2x32 20 rounds
    ((0x00000000, 0x00000000, 0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xC4923A9C, 0x483DF7A0)),
]


def counter_normals(shape, step, site, key, like):
    """Draw ``site`` of step ``step`` from counters, as a step receives it."""
    halves = counter_normal_pairs((math.prod(shape) + 1) // 2, torch.tensor([step]), site, key, like)
    return PresampledSource(list(halves), 0, paired=True).normal(shape, like)


N = 400_000
KEY = torch.tensor([0x9E3779B9, 0x7F4A7C15], dtype=torch.int64)
LIKE = torch.zeros((), dtype=torch.float64)


@pytest.mark.parametrize(("inputs", "expected"), KNOWN_ANSWERS)
def test_threefry_matches_random123_known_answers(inputs, expected):
    c0, c1, k0, k1 = (torch.tensor([v], dtype=torch.int64).to(torch.int32) for v in inputs)  # bit patterns
    words = threefry2x32(c0, c1, k0, k1)
    assert tuple(int(w) & 0xFFFFFFFF for w in words) == expected


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_counter_normals_have_the_standard_normal_law(dtype):
    z = counter_normals((N,), 17, 0, KEY, torch.zeros((), dtype=dtype)).double().numpy()
    assert abs(z.mean()) <= Z_TOL / math.sqrt(N)
    assert abs(z.var() - 1.0) <= Z_TOL * math.sqrt(2.0 / N)
    assert abs((z**4).mean() - 3.0) <= Z_TOL * math.sqrt(96.0 / N)  # Var z⁴ = 105 − 9
    tail = float((np.abs(z) > 3.0).mean())
    p_tail = 2.0 * stats.norm.sf(3.0)
    assert abs(tail - p_tail) <= Z_TOL * math.sqrt(p_tail * (1 - p_tail) / N)
    assert stats.kstest(z, "norm").pvalue > 1e-3


def test_cosine_and_sine_halves_steps_and_sites_are_uncorrelated():
    """Pairs share a counter (the cosine and sine halves); steps and draw sites differ only in
    the counter's second word or the key.  None of these may be correlated."""
    base = counter_normals((N,), 5, 0, KEY, LIKE).numpy()
    halves = base[: N // 2], base[N // 2 :]
    others = {
        "cosine vs sine half": halves,
        "next step": (base, counter_normals((N,), 6, 0, KEY, LIKE).numpy()),
        "next site": (base, counter_normals((N,), 5, 1, KEY, LIKE).numpy()),
        "neighbouring element": (base[:-1], base[1:]),
    }
    for what, (a, b) in others.items():
        assert abs(np.corrcoef(a, b)[0, 1]) <= Z_TOL / math.sqrt(len(a)), what


def test_counter_noise_is_a_function_of_step_site_and_key():
    a = counter_normals((3, 4), 9, 2, KEY, LIKE)
    assert torch.equal(a, counter_normals((3, 4), 9, 2, KEY, LIKE))
    assert not torch.allclose(a, counter_normals((3, 4), 9, 2, KEY + 1, LIKE))
    assert not torch.allclose(a, counter_normals((3, 4), 10, 2, KEY, LIKE))
    cosines, sines = counter_normal_pairs(3, torch.tensor([9]), 2, KEY, LIKE)
    assert torch.equal(torch.cat([cosines[0], sines[0]])[:5], counter_normals((5,), 9, 2, KEY, LIKE))


def test_a_block_of_counter_draws_is_the_steps_draws_whatever_the_block():
    """A block's presampled halves, joined by the source, are each step's own draws: cutting a
    run into other blocks cannot change its noise."""
    draws = [Draw("normal", (3, 5)), Draw("normal", (2,)), Draw("normal", (7,))]
    block = counter_presample(draws, torch.arange(4, 10), KEY, LIKE)
    assert len(block) == 2 * len(draws)
    for i, step in enumerate(range(4, 10)):
        source = PresampledSource(block, i, paired=True)
        for site, draw in enumerate(draws):
            assert torch.equal(
                source.normal(draw.shape, LIKE), counter_normals(draw.shape, step, site, KEY, LIKE)
            )
        with pytest.raises(NotPresampleable):
            source.normal((1,), LIKE)  # every draw of the step is handed out
    with pytest.raises(NotPresampleable):
        counter_presample([Draw("gamma", (2,), 1.5)], torch.arange(2), KEY, LIKE)


def test_a_run_key_comes_from_its_generator():
    keys = [counter_key(torch.Generator().manual_seed(s), torch.device("cpu")) for s in (1, 1, 2)]
    assert torch.equal(keys[0], keys[1]) and not torch.equal(keys[0], keys[2])
    assert keys[0].dtype == torch.int64 and bool(((keys[0] >= 0) & (keys[0] < 2**32)).all())
