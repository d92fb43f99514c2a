"""Which objects are labelled (SPOCO@p, full supervision, annotation budget) and the two-view patches.

Object selection is seeded by ``sampling_seed`` alone, so the thesis' "3 random samplings of the
ground-truth objects" are three seeds, independent of the training seed. Patches come from the
U-Net's seeded, foreground-aware patch sampler (``unet.data.PatchDataset``); what differs is the
output: the unlabelled pixels of a patch get id 0, and the two views for f and g share the
geometry (flip, rot90, elastic) but draw their own blur, noise and jitter.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ...errors import InputError
from ..unet import augment as aug
from ..unet.data import PatchDataset, Volume, label_ids
from .params import SpocoParams

log = logging.getLogger(__name__)


@dataclass
class Selection:
    """Per training volume: the labelled object ids and whether its background is labelled too."""

    objects: list[np.ndarray]
    background: list[bool]

    @property
    def n_objects(self) -> int:
        return int(sum(len(o) for o in self.objects))

    def used(self, v: int) -> bool:
        return len(self.objects[v]) > 0 or self.background[v]


def select_objects(
    ids: list[np.ndarray],
    supervision: str,
    fraction: float = 1.0,
    budget: int | None = None,
    seed: int = 0,
) -> Selection:
    """The labelled objects of each image (``ids``: its object ids, background 0 excluded).

    * ``full``: every object and the background (SPOCO); with a ``budget`` of N objects, one
      densely labelled image: the one whose object count is nearest to N (Table 3.6 "dense").
    * ``sparse``: a seeded random fraction p of each image's objects, at least one; never the
      background (SPOCO@p); with a ``budget``, N objects drawn from all images together, each
      image keeping those that fell on it (Table 3.6 "sparse").
    """
    rng = np.random.default_rng([seed, 11])
    ids = [np.unique(np.asarray(i)) for i in ids]
    ids = [i[i != 0] for i in ids]
    n = len(ids)
    if supervision == "full":
        if budget is None:
            return Selection([i.copy() for i in ids], [True] * n)
        counts = np.array([len(i) for i in ids])
        gap = np.abs(counts - budget)
        chosen = int(rng.choice(np.flatnonzero(gap == gap.min())))
        return Selection(
            [ids[v] if v == chosen else ids[v][:0] for v in range(n)], [v == chosen for v in range(n)]
        )
    if budget is None:
        out = []
        for i in ids:
            k = min(len(i), max(1, int(round(fraction * len(i)))))
            out.append(np.sort(rng.choice(i, size=k, replace=False)) if len(i) else i)
        return Selection(out, [False] * n)
    pairs = np.array([(v, o) for v, i in enumerate(ids) for o in i], dtype=np.int64).reshape(-1, 2)
    if budget > len(pairs):
        log.warning("spoco: object_budget %d exceeds the %d objects of the training images", budget, len(pairs))
    keep = pairs[np.sort(rng.choice(len(pairs), size=min(budget, len(pairs)), replace=False))]
    return Selection([np.sort(keep[keep[:, 0] == v, 1]) for v in range(n)], [False] * n)


def selection_for(volumes: list[Volume], params: SpocoParams, where: str = "spoco.train") -> Selection:
    """``select_objects`` over the training volumes; a label image without objects is an input error."""
    ids = []
    for vol in volumes:
        found = label_ids(vol.labels, vol.roi)
        if not len(found):
            raise InputError(f"{where}: the label image has no objects (only background) in its roi", vol.item.labels)
        ids.append(found)
    sel = select_objects(
        ids, params.supervision, params.object_fraction, params.object_budget, params.sampling_seed
    )
    log.info(
        "spoco: %s supervision, %d of %d objects labelled in %d of %d images%s",
        params.supervision,
        sel.n_objects,
        sum(len(i) for i in ids),
        sum(sel.used(v) for v in range(len(volumes))),
        len(volumes),
        " (+ background)" if any(sel.background) else "",
    )
    return sel


class TwoViewPatches(PatchDataset):
    """``length`` patches of the seeded stream: (view for f (1, *P), view for g (1, *P), object ids (*P)).

    Ids are the ground-truth ids of the labelled objects, 0 where unlabelled (everything else,
    and the padding outside the ROI); a labelled background gets an id of its own.
    """

    def __init__(
        self,
        volumes: list[Volume],
        params: SpocoParams,
        selection: Selection,
        length: int,
        offset: int = 0,
        augment: bool = True,
        seed_offset: int = 0,
    ):
        self.selection = selection
        super().__init__(volumes, params, length, offset=offset, augment=augment, seed_offset=seed_offset)

    def _halo(self) -> int:
        return 0

    def _select_objects(self) -> list[np.ndarray | None]:
        return list(self.selection.objects)

    def _select_units(self) -> list[tuple[int, int | None]]:
        return [u for u in self._all_units() if self.selection.used(u[0])]

    def __getitem__(self, index: int):
        p = self.params
        rng, vol, img, lab, inside, sup = self.sample(index)
        ids = np.where(sup > 0, lab, 0)
        if self.selection.background[next(v for v, x in enumerate(self.volumes) if x is vol)]:
            ids[(lab == 0) & (inside > 0)] = int(lab.max()) + 1  # the background: one more object
        ids[inside == 0] = 0
        if self.augment:
            img, (ids,) = aug.geometric(img, [ids], rng, p.augment)
            view_f, view_g = aug.intensity(img, rng, p.augment), aug.intensity(img, rng, p.augment)
        else:
            view_f = view_g = img
        return (
            torch.from_numpy(np.ascontiguousarray(view_f[None], dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(view_g[None], dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64)),
        )
