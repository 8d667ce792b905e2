"""Random dropout masks, drawn with a counter-based generator.

A **mask** is one keep/drop bit per *unit* over all *sites* at once; units are ordered site by
site, in the order of the site table. Each site has a keep probability q
(:mod:`subnet.keep`).

:func:`sample_masks` draws masks with a counter-based generator, so mask ``i`` is a pure function
of ``(seed, i)``: a record can be sharded over processes or machines, resumed after a crash and
merged, and every shard draws exactly the masks an uninterrupted run would.

The record of what each mask predicts (:class:`~subnet.record.MaskRecord`, its writer, its size
limits and its folder) is :mod:`subnet.record`'s, which builds on this module.

This module is pure numpy: it never imports Keras or TensorFlow.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from subnet.errors import InputError, InputTypeError

__all__ = ["MAX_MASKS", "check_seed", "sample_masks"]

_PHILOX_WORDS = 4          # numpy's Philox4x64 gives 4 uint64 words per counter value
_BLOCK_WORDS = 1 << 22     # raw words drawn per call (32 MiB), bounds sample_masks' memory
_SHIFT = np.uint64(12)     # 64 - 52 bits
_FLIP = np.uint64((1 << 52) - 1)
_SEED_LIMIT = 1 << 64

MAX_MASKS = 10_000_000
"""The most masks a record may plan or hold (``n_masks``, chunk ends; the blog's analyses use
thousands), and :func:`sample_masks` draws in one call. Checked before any work, so that a
mistyped count is a one-line error."""


def check_seed(seed: Any, what: str = "seed") -> int:
    """Checks a seed of the mask sequence: a non-negative int below 2**64.

    Args:
        seed: The value to check.
        what: What the messages call it (``seed``, ``meta['seed']``).

    Returns:
        The seed, as an int.

    Raises:
        TypeError: If ``seed`` is not an int (a bool is not).
        ValueError: If ``seed`` is negative or not below 2**64.
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise InputTypeError(f"`{what}` must be a non-negative int. Received: {what}={seed!r} "
                        f"of type {type(seed).__name__}")
    seed = int(seed)
    if not 0 <= seed < _SEED_LIMIT:
        raise InputError(f"`{what}` must be a non-negative int below 2**64. "
                         f"Received: {what}={seed}")
    return seed


def _check_keep(keep: Any) -> np.ndarray:
    try:
        arr = np.asarray(keep, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputTypeError(f"`keep` must be a 1-D array of floats in (0, 1]. "
                        f"Received: keep of type {type(keep).__name__}") from None
    if arr.ndim != 1 or arr.size == 0:
        raise InputError(f"`keep` must be a non-empty 1-D array (one keep probability per unit). "
                         f"Received: keep with shape {arr.shape}")
    bad = ~(np.isfinite(arr) & (arr > 0.0) & (arr <= 1.0))
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise InputError(f"`keep` must hold keep probabilities in (0, 1]. Received: keep[{j}]="
                         f"{float(arr[j])!r} ({int(bad.sum())} of {arr.size} values out of range)")
    return arr


def _check_indices(indices: Any) -> np.ndarray:
    if isinstance(indices, range):  # len() of a huge range overflows; compute it instead
        count = max(0, -(-(indices.stop - indices.start) // indices.step))
    else:
        count = len(indices) if isinstance(indices, np.ndarray | Sequence) else 0
    if count > MAX_MASKS:
        raise InputError(f"`indices` must name at most {MAX_MASKS:,} masks per call "
                         f"(subnet.masks.MAX_MASKS). Received: {count:,} indices")
    if isinstance(indices, range):
        indices = np.arange(indices.start, indices.stop, indices.step, dtype=np.int64)
    arr = np.asarray(indices)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise InputTypeError(f"`indices` must be a range or a 1-D array of ints. "
                        f"Received: indices with dtype {arr.dtype}")
    if arr.ndim != 1:
        raise InputError(f"`indices` must be a range or a 1-D array of ints. "
                         f"Received: indices with shape {arr.shape}")
    if arr.size and arr.min() < 0:
        raise InputError(f"`indices` must be non-negative mask indices. "
                         f"Received: indices with a negative index, {int(arr.min())}")
    if arr.size and np.issubdtype(arr.dtype, np.unsignedinteger) and arr.max() > 2 ** 62:
        raise InputError(f"`indices` must be below 2**62. Received: {int(arr.max())}")
    return arr.astype(np.int64, copy=False)


def _grid(seed: int, rows: np.ndarray, n_units: int) -> np.ndarray:
    """Uniform grid indices for the given sorted, unique stream rows: uint64 (len(rows), n_units).

    Row r is read from Philox4x64 with key ``seed``, starting at counter
    ``r * ceil(n_units / 4)``: a pure function of (seed, r, n_units). Each uint64 word w gives
    the grid index ``g = w >> 12`` in [0, 2**52), which stands for the uniform
    ``u = (g + 0.5) * 2**-52``: a grid in (0, 1), symmetric about 1/2, that holds neither 0, 1
    nor 1/2. So ``1 - u`` is on the same grid (index ``g ^ (2**52 - 1)``), ``u < 1`` always holds
    (q = 1 keeps a unit in every mask) and at q = 1/2 a mask and its antithetic partner are exact
    complements. ``u < q`` is decided exactly in integers, as ``g < _thresholds(q)``.
    """
    blocks = -(-n_units // _PHILOX_WORDS)
    width = blocks * _PHILOX_WORDS
    out = np.empty((rows.size, n_units), dtype=np.uint64)
    if rows.size == 0:
        return out
    # Runs of consecutive rows are consecutive in the Philox stream: one draw per run.
    starts = np.concatenate(([0], np.flatnonzero(np.diff(rows) != 1) + 1, [rows.size]))
    per_call = max(1, _BLOCK_WORDS // width)
    for a, b in zip(starts[:-1], starts[1:], strict=True):
        for lo in range(int(a), int(b), per_call):
            hi = min(int(b), lo + per_call)
            gen = np.random.Philox(key=seed, counter=int(rows[lo]) * blocks)
            raw = gen.random_raw((hi - lo) * width).reshape(hi - lo, width)
            np.right_shift(raw[:, :n_units], _SHIFT, out=out[lo:hi])
    return out


def _thresholds(keep: np.ndarray) -> np.ndarray:
    """Integer thresholds t (uint64) with ``(g + 0.5) * 2**-52 < q  <=>  g < t`` for ints g."""
    # q * 2**52 - 0.5 is exact in float64 for q in (0, 1]; g < y <=> g < ceil(y) for ints g.
    return np.ceil(keep * 2.0 ** 52 - 0.5).astype(np.uint64)


def sample_masks(keep: Any, seed: int, indices: range | Sequence[int] | np.ndarray,
                 antithetic: bool = False) -> np.ndarray:
    """Draws masks ``indices`` of the mask sequence defined by ``keep`` and ``seed``.

    Mask ``i`` is a pure function of ``(seed, i)`` (given ``keep``): it never depends on which
    other indices are requested, so any subset, in any order, with repeats, gives the same rows as
    the full sequence. Unit ``j`` of mask ``i`` is kept when ``u[j] < keep[j]``, with ``u`` a
    vector of uniforms in (0, 1) from a counter-based generator (numpy's ``Philox`` bit
    generator with key ``seed``; only its raw, version-stable output is used).

    With ``antithetic=True`` masks come in pairs ``(2j, 2j + 1)`` that share the uniforms ``u`` of
    pair ``j``: mask ``2j`` keeps ``u < keep`` and mask ``2j + 1`` keeps ``1 - u < keep``. Each
    mask on its own still keeps unit ``j`` with probability ``keep[j]``; at ``keep = 0.5`` the two
    masks of a pair are exact complements. Antithetic and plain sequences with the same seed are
    different sequences (except for even indices, where mask ``2j`` equals plain mask ``j``).

    Args:
        keep: Keep probability of each unit, shape (n_units,), floats in (0, 1]. A probability of
            exactly 1 keeps the unit in every mask.
        seed: Non-negative int below 2**64.
        indices: Mask indices: a ``range`` or a 1-D int array of non-negative ints (any order,
            repeats allowed, may be empty).
        antithetic: Whether to draw antithetic pairs.

    Returns:
        Bool array, shape (len(indices), n_units): True where the unit is kept.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If ``keep`` is not 1-D or has values outside (0, 1], if ``seed`` is negative,
            or if an index is negative.
    """
    keep = _check_keep(keep)
    seed = check_seed(seed)
    if not isinstance(antithetic, bool | np.bool_):
        raise InputTypeError(f"`antithetic` must be a bool. Received: antithetic={antithetic!r}")
    idx = _check_indices(indices)
    n_units = keep.size
    threshold = _thresholds(keep)
    out = np.empty((idx.size, n_units), dtype=bool)
    if idx.size == 0:
        return out
    rows = idx >> 1 if antithetic else idx
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    uniq, first = np.unique(sorted_rows, return_index=True)
    first = np.append(first, sorted_rows.size)
    per_block = max(1, _BLOCK_WORDS // n_units)
    for a in range(0, uniq.size, per_block):
        b = min(uniq.size, a + per_block)
        g = _grid(seed, uniq[a:b], n_units)
        s0, s1 = int(first[a]), int(first[b])
        target = order[s0:s1]
        if s1 - s0 != b - a:  # repeated rows (repeats, or both masks of an antithetic pair)
            g = g[np.searchsorted(uniq[a:b], sorted_rows[s0:s1])]
        if antithetic:
            odd = (idx[target] & 1).astype(bool)
            g[odd] ^= _FLIP
        out[target] = g < threshold
    return out

