"""Reading a crop store (``zarrseg crops``) for training: one split, a seeded fraction, rotations.

Learning methods that learn from crops take the store's path and a split; a ``CropSet`` gives
them the crop count, a nested seeded subset for a data fraction (the 10 % subset lies inside
the 20 % one, so fraction curves compare like with like) and batches read straight from Zarr
with the store's rotation rule applied. Plain Zarr arrays: any Zarr reader (and the ``unet``
method, which opens ``<store>/<split>/image`` as a stack of 2D slices) reads them too.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from ..errors import ConfigError, InputError
from .prepare import TABLE


def check_fraction(value: float, name: str) -> None:
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"{name} is a fraction of the crops in (0, 1], got {value}")


class CropSet:
    """The crops of one split (``labelled``: only crops with masks)."""

    def __init__(self, store: str | Path, split: str, labelled: bool = False):
        self.store = Path(store)
        if not (self.store / TABLE).is_file():
            raise InputError("not a crop store (written by 'zarrseg crops'): no origins.parquet", self.store)
        root = zarr.open_group(str(self.store), mode="r")
        self.meta = meta = dict(root.attrs).get("crops", {})
        table = pd.read_parquet(self.store / TABLE)
        table = table[table["split"] == split]
        if labelled:
            table = table[table["labelled"]]
        if table.empty:
            what = "labelled " if labelled else ""
            raise InputError(f"the crop store holds no {what}crops of split {split!r}", self.store)
        self.table = table.sort_values("index").reset_index(drop=True)
        self.images = root[f"{split}/image"]
        self.masks = root[f"{split}/mask"]
        self.rotations = bool(meta.get("rotations", False))
        self.crop_size = int(self.images.shape[-1])
        self.indices = self.table["index"].to_numpy(np.int64)  # rows of the arrays this set uses

    def __len__(self) -> int:
        return int(self.indices.size)

    def subset(self, fraction: float, seed: int) -> np.ndarray:
        """Array rows of a seeded fraction of the set (at least one crop); nested in ``fraction``."""
        n = max(1, math.ceil(fraction * len(self)))
        order = np.random.default_rng([seed, 13]).permutation(len(self))
        return np.sort(self.indices[order[:n]])

    def read(self, rows: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Images (n, 1, S, S) float32 and masks (n, S, S) uint8 of array ``rows``, each rotated
        by a random multiple of 90 degrees when the store says so (the same one for image and mask)."""
        unique, inverse = np.unique(rows, return_inverse=True)  # Zarr reads sorted, distinct rows
        image = np.asarray(self.images.oindex[unique], dtype=np.float32)[inverse]
        mask = np.asarray(self.masks.oindex[unique])[inverse]
        if self.rotations:
            k = rng.integers(0, 4, size=len(rows))
            image = np.stack([np.rot90(a, int(r)) for a, r in zip(image, k, strict=True)])
            mask = np.stack([np.rot90(a, int(r)) for a, r in zip(mask, k, strict=True)])
        return np.ascontiguousarray(image[:, None]), np.ascontiguousarray(mask)
