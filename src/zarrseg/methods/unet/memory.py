"""Choose the largest training batch / patch that fits in GPU memory (probe, shrink, retry, regrow)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from ...errors import ConfigError

log = logging.getLogger(__name__)


def shrink_patch(patch: list[int], divisor: Sequence[int]) -> list[int] | None:
    """Halve the patch along its longest axis (in units of the divisor); None when it cannot shrink."""
    axis = int(np.argmax([p / d for p, d in zip(patch, divisor, strict=True)]))
    d = divisor[axis]
    if patch[axis] <= d:
        return None
    out = list(patch)
    out[axis] = max(d, (patch[axis] // 2) // d * d)
    return out


def fit_to_memory(
    fits: Callable[[int, list[int]], bool], batch: int, patch: Sequence[int], divisor: Sequence[int]
) -> tuple[int, list[int]]:
    """The largest (batch, patch) on the shrink ladder for which ``fits(batch, patch)`` is True.

    Halve the batch down to 1, then shrink the patch (context matters more to a U-Net than
    batch size), and finally double the batch again, up to the requested one, while it still
    fits at the chosen patch.
    """
    requested, patch = batch, list(patch)
    while not fits(batch, patch):
        if batch > 1:
            batch //= 2
        else:
            smaller = shrink_patch(patch, divisor)
            if smaller is None:
                raise ConfigError(
                    "the model does not fit in GPU memory even with batch 1 and the smallest patch"
                )
            patch = smaller
        log.warning("CUDA out of memory: retrying with batch %d, patch %s", batch, patch)
    while batch * 2 <= requested and fits(batch * 2, patch):
        batch *= 2
    return batch, patch
