"""How the model's input is normalised: zarrseg's ``Normalization`` or a BioImage.IO preprocessing chain.

Both are computed with statistics of the whole volume (per channel), never of a tile: per-tile
statistics make neighbouring tiles disagree and leave seams. For a BioImage.IO package this is
the one deliberate difference from its declared per-sample semantics; on tiles large enough to
be representative the two agree. Statistics-based steps (``zero_mean_unit_variance``,
``scale_range``) may follow affine steps (``scale_linear``, ``fixed_zero_mean_unit_variance``):
the volume statistics are carried through them exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..normalize import Normalization, VolumeStats, apply

STATS_OPS = ("zero_mean_unit_variance", "scale_range")
AFFINE_OPS = ("scale_linear", "fixed_zero_mean_unit_variance", "ensure_dtype")
OTHER_OPS = ("clip", "binarize", "sigmoid")


@dataclass
class NormalizationPrep:
    """A zarrseg checkpoint's normalisation (``normalize.apply`` with volume statistics)."""

    norm: Normalization

    @property
    def stats_normalization(self) -> Normalization:
        return self.norm

    def __call__(self, x: np.ndarray, stats: VolumeStats, channel: int) -> np.ndarray:
        return apply(x, stats, self.norm)

    def describe(self) -> dict:
        return dataclasses.asdict(self.norm)


def _per_channel(value, channel: int) -> float:
    return float(value[channel] if isinstance(value, (list, tuple)) else value)


@dataclass
class ChainPrep:
    """A BioImage.IO preprocessing chain: ``[{"id": ..., "kwargs": {...}}, ...]`` as in ``rdf.yaml``."""

    steps: list[dict]

    @property
    def stats_normalization(self) -> Normalization:
        """What the volume statistics pass computes: the percentiles ``scale_range`` asks for."""
        for step in self.steps:
            if step["id"] == "scale_range":
                kw = step.get("kwargs", {})
                return Normalization(
                    "percentile", float(kw.get("min_percentile", 0.0)), float(kw.get("max_percentile", 100.0))
                )
        return Normalization("meanstd")

    def check(self) -> None:
        """``ValueError`` naming the first step this predictor cannot compute with volume statistics."""
        affine, flipped = True, False  # the steps so far are affine / some affine step had a gain <= 0
        if sum(s["id"] == "scale_range" for s in self.steps) > 1:
            raise ValueError("more than one 'scale_range' preprocessing step is not supported")
        for step in self.steps:
            op, kw = step["id"], step.get("kwargs", {}) or {}
            if op not in STATS_OPS + AFFINE_OPS + OTHER_OPS:
                raise ValueError(f"preprocessing step {op!r} is not supported")
            if kw.get("axis") not in (None, "channel"):
                raise ValueError(
                    f"preprocessing {op!r} along axis {kw['axis']!r} is not supported (only 'channel')"
                )
            if op == "clip" and (
                kw.get("min_percentile") is not None or kw.get("max_percentile") is not None
            ):
                raise ValueError("preprocessing 'clip' by percentiles is not supported")
            if op in STATS_OPS and not affine:
                raise ValueError(f"preprocessing {op!r} after a non-linear step is not supported")
            if op == "scale_range" and flipped:
                raise ValueError("preprocessing 'scale_range' after a negative gain is not supported")
            if op == "scale_linear":
                flipped = flipped or bool(np.any(np.atleast_1d(kw.get("gain", 1.0)) <= 0))
            if op in OTHER_OPS or (
                op == "ensure_dtype" and not str(kw.get("dtype", "float32")).startswith("float")
            ):
                affine = False

    def __call__(self, x: np.ndarray, stats: VolumeStats, channel: int) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        gain, offset = 1.0, 0.0  # the affine map applied so far: volume statistics follow it
        for step in self.steps:
            op, kw = step["id"], step.get("kwargs", {}) or {}
            if op == "ensure_dtype":
                x = _cast(x, str(kw.get("dtype", "float32")))
                continue
            if op == "scale_linear":
                g, o = (
                    _per_channel(kw.get("gain", 1.0), channel),
                    _per_channel(kw.get("offset", 0.0), channel),
                )
            elif op == "fixed_zero_mean_unit_variance":
                std = _per_channel(kw["std"], channel)
                g, o = 1.0 / std, -_per_channel(kw["mean"], channel) / std
            elif op == "zero_mean_unit_variance":
                mean, std = gain * stats.mean + offset, abs(gain) * stats.std
                g = 1.0 / (std + float(kw.get("eps", 1e-6)))
                o = -mean * g
            elif op == "scale_range":
                lo, hi = gain * stats.low + offset, gain * stats.high + offset
                g = 1.0 / (hi - lo + float(kw.get("eps", 1e-6)))
                o = -lo * g
            else:
                x = _other(op, kw, x, channel)
                continue
            x = x * np.float32(g) + np.float32(o)
            gain, offset = gain * g, offset * g + o
        return x.astype(np.float32, copy=False)

    def describe(self) -> list[dict]:
        return self.steps


def _cast(x: np.ndarray, dtype: str) -> np.ndarray:
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        x = np.clip(np.round(x), info.min, info.max)
    return x.astype(dt).astype(np.float32)


def _other(op: str, kw: dict, x: np.ndarray, channel: int) -> np.ndarray:
    if op == "clip":
        lo, hi = kw.get("min"), kw.get("max")
        return np.clip(x, -np.inf if lo is None else lo, np.inf if hi is None else hi).astype(np.float32)
    if op == "binarize":
        return (x > _per_channel(kw["threshold"], channel)).astype(np.float32)
    if op == "sigmoid":
        return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)
    raise ValueError(f"preprocessing step {op!r} is not supported")
