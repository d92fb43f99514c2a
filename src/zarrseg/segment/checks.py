"""Cheap checks of the segment stage's input and blocking, each saying what to change.

- ``check_values``: NaN / Inf in the map (reported by the staging pass) is an input error.
- ``looks_inverted``: a boundary map whose high values mean cell interior (exported
  probability files often are) segments without an error into nonsense; a few sampled crops
  tell: in a boundary map the voxels above the threshold are the minority and form thin
  sheets, in an inverted one they are the majority and thicker than what lies between them.
- ``halo_advice``: the halo each axis needs (in voxels of that axis, within what the blocks
  can hold) for blockwise supervoxels to match a whole-volume run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import bioimage_cpp as bic
import numpy as np

from ..blocks import BlockGrid
from ..errors import InputError
from .io import ArrayRef
from .watershed import DistanceRange, WatershedSettings

log = logging.getLogger(__name__)

HALO_REACH = 1.5  # halo / largest distance-transform value below which blocks may disagree
SAMPLE_BLOCKS = 4  # crops the polarity check reads
SAMPLE_SIDE = 128  # their side (voxels)
# the voxels above the threshold must be this much thicker than those below to call a map inverted.
# Measured (above / below, fraction above): inverted gala probabilities 3.28 / 1.51 (66 %), inverted
# ovule membrane stain 3.97 / 2.61 (53 %), ISBI labels (255 = interior) 2.89 / 1.08 (78 %), nuclei
# stains 12-14 / 1.1 (99.6 %); the right way round all are below 50 %, except inverted FlyEM raw
# (a poor but not an inverted boundary map: 3.17 / 2.67, 51 %), which this margin lets pass.
THICKER = 1.25


def check_values(summaries: Sequence[dict], path: str | Path) -> float:
    """Raise on NaN / Inf voxels (staging summaries); return the largest finite value."""
    bad = int(sum(int(s.get("nonfinite", 0)) for s in summaries))
    if bad:
        raise InputError(
            f"the map has {bad} NaN/Inf voxels (a failed prediction or export?); segment needs finite values",
            path,
        )
    return max((float(s.get("max", 0.0)) for s in summaries), default=0.0)


def _crop(box: tuple[slice, ...], side: int) -> tuple[slice, ...]:
    out = []
    for s in box:
        n = s.stop - s.start
        start = s.start + max(0, (n - side) // 2)
        out.append(slice(start, min(s.stop, start + side)))
    return tuple(out)


def _thickness(phase: np.ndarray) -> float:
    """Mean distance of a phase's voxels to the other phase (how thick its parts are)."""
    dt = bic.distance.distance_transform(phase.astype(np.uint8))
    return float(dt[phase].mean())


def looks_inverted(staged: ArrayRef, grid: BlockGrid, threshold: float) -> dict | None:
    """The evidence (fraction above ``threshold``, thickness of both phases) when the map looks inverted."""
    blocks = list(grid)
    picks = sorted({int(i) for i in np.linspace(0, len(blocks) - 1, min(SAMPLE_BLOCKS, len(blocks)))})
    n_high = n_all = 0
    thick = {True: [], False: []}
    for i in picks:
        values = staged.read_float(_crop(blocks[i].inner, SAMPLE_SIDE))
        high = values > threshold
        n_high, n_all = n_high + int(high.sum()), n_all + high.size
        for phase in (True, False):
            voxels = high if phase else ~high
            if voxels.any() and not voxels.all():
                thick[phase].append((_thickness(voxels), int(voxels.sum())))
    if not n_all or not thick[True] or not thick[False]:
        return None
    fraction = n_high / n_all
    mean = {p: sum(t * n for t, n in v) / sum(n for _, n in v) for p, v in thick.items()}
    if fraction > 0.5 and mean[True] > THICKER * mean[False]:
        return {"fraction_above": round(fraction, 3), "thickness_above": round(mean[True], 2),
                "thickness_below": round(mean[False], 2)}
    return None


def warn_inverted(path: str | Path, threshold: float, evidence: dict) -> None:
    log.warning(
        "segment: %s looks inverted: %.0f%% of the sampled voxels are above the threshold %.2f and they form "
        "regions thicker than those between them (%.1f vs %.1f voxels), as cell interiors do; if high values "
        "mean cell interior, add `invert: true` to the segment parameters (--set invert=true)",
        path,
        100 * evidence["fraction_above"],
        threshold,
        evidence["thickness_above"],
        evidence["thickness_below"],
    )


def halo_advice(grid: BlockGrid, settings: WatershedSettings, dt_range: DistanceRange) -> list[int]:
    """Halo per axis (voxels of that axis) reaching ``HALO_REACH`` x the largest distance to a boundary.

    The DT-watershed floods from distance-transform maxima; a block whose halo does not reach
    about 1.5x the largest distance value can miss a seed behind its face and give a
    supervoxel there to a neighbour. Measured (ARand of blockwise vs whole-volume raw
    supervoxels): FlyEM mirrored 256^3, max distance 19.6: halo 16 -> 0.04, 24 -> 0.03,
    32 -> 0.002; gala, max 13: z-halo 16 (mutex watershed VOI to GT +0.03), 20 -> +0.0002.
    The distance is weighted by the voxel size, so a coarse axis needs fewer voxels. Axes
    that need none: a single block along them, or z in stacked-2D mode; no axis is advised
    more than its blocks can hold (block - 1).
    """
    ndim = len(grid.shape)
    biggest = float(np.max(dt_range.hi)) if np.size(dt_range.hi) else 0.0
    pitch = settings.pitch(ndim) or [1.0] * ndim
    out = []
    for a in range(ndim):
        if grid.grid_shape[a] == 1 or (a == 0 and settings.per_slice(ndim)):
            out.append(0)
        else:
            out.append(min(int(np.ceil(HALO_REACH * biggest / pitch[a])), grid.block_shape[a] - 1))
    return out


def check_halo_reach(grid: BlockGrid, settings: WatershedSettings, dt_range: DistanceRange) -> list[int] | None:
    """Warn when the halo is short of ``halo_advice``; return the advice then, else None."""
    advice = halo_advice(grid, settings, dt_range)
    if all(h >= a for h, a in zip(grid.halo, advice, strict=True)):
        return None
    biggest = float(np.max(dt_range.hi))
    pitch = settings.pitch(len(grid.shape)) or [1.0] * len(grid.shape)
    capped = [
        a
        for a, (want, b) in enumerate(zip(advice, grid.block_shape, strict=True))
        if want == b - 1 and HALO_REACH * biggest / pitch[a] > b - 1
    ]
    hint = ""
    if capped:
        axes = "".join("zyx"[-len(grid.shape):][a] for a in capped)
        hint = f"; blocks along {axes} are too thin for the halo they need: larger blocks there, or one block"
    log.warning(
        "segment: halo %s is short of %.1fx the largest distance to a boundary (%.1f, in voxels of the finest "
        "axis): supervoxels near block faces may differ from a whole-volume run; a halo of %s voxels avoids that%s",
        list(grid.halo),
        HALO_REACH,
        biggest,
        advice,
        hint,
    )
    return advice
