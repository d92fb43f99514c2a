"""Lazy, seeded, foreground-aware patch sampling from OME-Zarr / Zarr volumes.

Patches are read straight from Zarr (only the patch plus a small target halo), so training
data never has to fit in memory. Sample ``i`` is drawn from its own generator seeded with
``(seed, i)``: the stream is identical for any number of DataLoader workers and a resumed run
continues exactly where it stopped. 2D models train on yx slices of 3D volumes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ... import ome
from ...blocks import BlockGrid
from ...errors import ConfigError, InputError
from ...normalize import Normalization, VolumeStats, apply, volume_stats
from ...parallel import map_blocks
from . import augment as aug
from .targets import make_target
from .train_params import DataItem, TrainParams

log = logging.getLogger(__name__)


def parse_roi(text: str | None, shape: tuple[int, ...], where: str) -> tuple[slice, ...]:
    """``"0:20, :, 100:"`` -> slices (missing trailing axes: everything)."""
    if not text:
        return tuple(slice(0, s) for s in shape)
    parts = [p.strip() for p in text.split(",")]
    if len(parts) > len(shape):
        raise ConfigError(f"{where}: roi {text!r} has more axes than the {len(shape)}D image")
    out = []
    for i, n in enumerate(shape):
        part = parts[i] if i < len(parts) else ":"
        try:
            bits = (
                [int(b) if b.strip() else None for b in part.split(":")]
                if ":" in part
                else [int(part), int(part) + 1]
            )
            start, stop, *_ = [*bits, None][:2]
            sl = slice(*slice(start, stop).indices(n)[:2])
        except ValueError as err:
            raise ConfigError(f"{where}: cannot parse roi {text!r}") from err
        if sl.stop <= sl.start:
            raise ConfigError(f"{where}: roi {text!r} is empty along axis {i}")
        out.append(sl)
    return tuple(out)


def open_labels(path: str) -> ome.SpatialView:
    image = ome.open_image(path)
    return ome.SpatialView.of(image)


@dataclass
class Volume:
    """One opened data item: image view, label view, ROI and the image's volume statistics."""

    item: DataItem
    image: ome.SpatialView
    labels: ome.SpatialView
    roi: tuple[slice, ...]
    stats: VolumeStats

    @classmethod
    def open(cls, item: DataItem, norm: Normalization, model_ndim: int, where: str) -> Volume:
        image = ome.SpatialView.of(ome.open_image(item.image), channel=item.channel)
        labels = open_labels(item.labels)
        if image.shape != labels.shape:
            raise InputError(
                f"labels of shape {labels.shape} do not match the image {item.image} {image.shape}",
                item.labels,
            )
        if labels.dtype.kind not in "iub":
            raise InputError(f"labels must be integers, got {labels.dtype}", item.labels)
        if image.ndim < model_ndim:
            raise InputError(f"a {model_ndim}D model cannot train on a {image.ndim}D image", item.image)
        roi = parse_roi(item.roi, image.shape, where)
        return cls(item, image, labels, roi, volume_stats(image, norm, source=item.image))

    @property
    def roi_shape(self) -> tuple[int, ...]:
        return tuple(s.stop - s.start for s in self.roi)


def label_ids(view: ome.SpatialView, roi: tuple[slice, ...]) -> np.ndarray:
    """Object ids inside ``roi``, gathered blockwise (for object-level partial supervision)."""
    shape = tuple(s.stop - s.start for s in roi)
    grid = BlockGrid(shape, [min(s, 64 if len(shape) == 3 else 512) for s in shape])

    def ids(block):
        box = tuple(slice(r.start + b.start, r.start + b.stop) for r, b in zip(roi, block.inner, strict=True))
        return {"ids": np.unique(view[box])}

    parts = map_blocks(ids, grid, name="label ids")
    out = np.unique(np.concatenate([p["ids"] for p in parts]))
    return out[out != 0]


class PatchDataset(torch.utils.data.Dataset):
    """``length`` random training patches: (image (1, *P), target (C, *P), mask (C, *P))."""

    def __init__(
        self,
        volumes: list[Volume],
        params: TrainParams,
        length: int,
        offset: int = 0,
        augment: bool = True,
        seed_offset: int = 0,
    ):
        self.volumes, self.params, self.length, self.offset = volumes, params, length, offset
        self.augment, self.seed = augment, params.loop.seed + seed_offset
        self.nd = params.model.ndim
        self.patch = params.patch
        self.halo = self._halo()
        self.objects = self._select_objects()
        self.units = self._select_units()

    def _halo(self) -> int:
        """Voxels read around a patch (what its target computation needs)."""
        return self.params.target.halo(self.nd)

    # --- partial supervision ------------------------------------------------------------------
    def _all_units(self) -> list[tuple[int, int | None]]:
        """Training 'images': volumes for 3D models, (volume, z) slices for 2D models on stacks."""
        units = []
        for v, vol in enumerate(self.volumes):
            if vol.image.ndim == self.nd:
                units.append((v, None))
            else:
                units.extend((v, z) for z in range(vol.roi[0].start, vol.roi[0].stop))
        return units

    def _select_units(self) -> list[tuple[int, int | None]]:
        units = self._all_units()
        p = self.params
        if p.supervision_unit == "images" and p.supervision_fraction < 1.0:
            rng = np.random.default_rng([p.loop.seed, 1])
            n = max(1, int(round(p.supervision_fraction * len(units))))
            keep = sorted(rng.choice(len(units), size=n, replace=False).tolist())
            units = [units[i] for i in keep]
            log.info("supervision: %d of %d training images", len(units), len(self._all_units()))
        return units

    def _select_objects(self) -> list[np.ndarray | None]:
        p = self.params
        if p.supervision_unit != "objects" or p.supervision_fraction >= 1.0:
            return [None] * len(self.volumes)
        rng = np.random.default_rng([p.loop.seed, 2])
        out = []
        for vol in self.volumes:
            ids = label_ids(vol.labels, vol.roi)
            n = max(1, int(round(p.supervision_fraction * len(ids))))
            out.append(np.sort(rng.choice(ids, size=n, replace=False)) if len(ids) else ids)
            log.info("supervision: %d of %d objects of %s", n, len(ids), vol.item.labels)
        return out

    # --- sampling -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.length

    def _unit_weights(self) -> np.ndarray:
        w = []
        for v, z in self.units:
            shape = self.volumes[v].roi_shape
            w.append(np.prod(shape[1:] if z is not None else shape))
        w = np.asarray(w, dtype=np.float64)
        return w / w.sum()

    def _read(self, vol: Volume, z: int | None, start: tuple[int, ...]):
        """Image, labels and inside-ROI flag of the patch at ``start`` (ROI coordinates) plus halo."""
        h, roi = self.halo, vol.roi[-self.nd :]
        want = [
            (r.start + s - h, r.start + s + p + h) for r, s, p in zip(roi, start, self.patch, strict=True)
        ]
        box = tuple(slice(max(lo, r.start), min(hi, r.stop)) for (lo, hi), r in zip(want, roi, strict=True))
        pad = [(b.start - lo, hi - b.stop) for (lo, hi), b in zip(want, box, strict=True)]
        full = ((slice(z, z + 1),) if z is not None else ()) + box
        img, lab = vol.image[full], vol.labels[full].astype(np.int64)
        if z is not None:
            img, lab = img[0], lab[0]
        inside = np.ones(lab.shape, dtype=np.uint8)
        if any(a or b for a, b in pad):
            fits = all(max(a, b) < s for (a, b), s in zip(pad, img.shape, strict=True))
            img = np.pad(img, pad, mode="reflect" if fits else "symmetric")
            lab = np.pad(lab, pad, mode="constant")
            inside = np.pad(inside, pad, mode="constant")  # outside the ROI: never supervised
        return img, lab, inside

    def sample(self, index: int):
        """Patch ``index`` of the seeded stream before augmentation: its generator (to go on
        drawing from), volume, normalised image, labels, inside-ROI flag and selected-object flag
        (None without object-level supervision), each with the halo."""
        p = self.params
        rng = np.random.default_rng([self.seed, index + self.offset])
        unit = self.units[int(rng.choice(len(self.units), p=self._unit_weights()))]
        vol, selected = self.volumes[unit[0]], self.objects[unit[0]]
        shape = vol.roi_shape[-self.nd :]
        core = self.core
        for _attempt in range(max(1, p.sampling_retries)):  # foreground-aware: prefer labelled patches
            start = tuple(
                int(rng.integers(0, max(1, s - q + 1))) for s, q in zip(shape, self.patch, strict=True)
            )
            img, lab, inside = self._read(vol, unit[1], start)
            sup = None if selected is None else np.isin(lab, selected).astype(np.uint8)
            labelled = (lab[core] > 0) if sup is None else sup[core] > 0
            if labelled.mean() >= p.min_foreground:
                break
        return rng, vol, apply(img, vol.stats, p.normalization), lab, inside, sup

    @property
    def core(self) -> tuple[slice, ...]:
        """The patch inside its halo."""
        return tuple(slice(self.halo, self.halo + q) for q in self.patch)

    def __getitem__(self, index: int):
        p = self.params
        rng, _vol, img, lab, inside, sup = self.sample(index)
        core = self.core
        others = [lab, inside] + ([sup] if sup is not None else [])
        if self.augment:
            img, others = aug.geometric(img, others, rng, p.augment)
        lab, inside = others[0], others[1]
        target, mask = make_target(lab, p.target, None if sup is None else others[2] > 0)
        mask *= inside[None]
        img = img[core]
        if self.augment:
            img = aug.intensity(img, rng, p.augment)
        target, mask = target[(slice(None), *core)], mask[(slice(None), *core)]
        return (
            torch.from_numpy(np.ascontiguousarray(img[None], dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(target)),
            torch.from_numpy(np.ascontiguousarray(mask)),
        )


def open_volumes(items: list[DataItem], params: TrainParams, where: str) -> list[Volume]:
    vols = [
        Volume.open(item, params.normalization, params.model.ndim, f"{where}[{i}]")
        for i, item in enumerate(items)
    ]
    for vol in vols:
        nd = params.model.ndim
        small = [s for s, p in zip(vol.roi_shape[-nd:], params.patch, strict=True) if s < p]
        if small and where == "train.train":
            log.warning(
                "%s: ROI %s is smaller than patch_shape %s; patches are padded",
                vol.item.image,
                vol.roi_shape,
                params.patch,
            )
    return vols
