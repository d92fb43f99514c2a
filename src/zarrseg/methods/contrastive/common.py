"""What the two contrastive stages share: crops from a crop store, a data fraction, epochs, batches."""

from __future__ import annotations

import math
from itertools import count
from typing import ClassVar

import numpy as np
import torch

from ...crops import CropSet
from ...learn.checkpoint import ModelIO
from ...learn.loop import Method
from ...normalize import Normalization
from ..unet.models import ModelConfig
from .params import CropStageParams, pretrain_loop  # noqa: F401


class CropMethod(Method):
    """Hooks that read seeded batches of crops: epoch ``e`` visits the crops of the data fraction
    in the order of permutation ``(seed, e)``, so a batch depends on the step index alone."""

    select_best = False  # pretraining has no validation: best.pt holds the final weights
    labelled: ClassVar[bool] = False  # learn only from crops with masks

    def open_crops(self) -> None:
        p = self.params
        self.crops = CropSet(p.crops, p.split, labelled=self.labelled)
        self.rows = self.crops.subset(p.fraction, p.loop.seed)

    @property
    def per_step(self) -> int:
        return self.params.batch_size * self.ctx.world

    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(len(self.rows) / self.per_step))

    def total_steps(self) -> int:
        p = self.params
        if p.epochs is None:
            return p.loop.steps
        return min(p.loop.steps, p.epochs * self.steps_per_epoch())

    def batch_rows(self, step: int) -> np.ndarray:
        """Array rows of this rank's batch of ``step`` (the last batch of an epoch wraps around)."""
        per_epoch, n = self.steps_per_epoch(), self.per_step
        order = np.random.default_rng([self.params.loop.seed, 7, step // per_epoch]).permutation(self.rows)
        start = (step % per_epoch) * n
        chosen = np.take(order, np.arange(start, start + n), mode="wrap")
        b = self.params.batch_size
        return chosen[self.ctx.rank * b : (self.ctx.rank + 1) * b]

    def batches(self, start: int):
        for step in count(start):
            rng = np.random.default_rng([self.params.loop.seed, step, self.ctx.rank])
            image, mask = self.crops.read(self.batch_rows(step), rng)
            yield torch.from_numpy(image).to(self.ctx.device), torch.from_numpy(mask).to(self.ctx.device)

    def normalization(self) -> Normalization:
        """How inference normalises an image for this model: as the crop store normalised its planes."""
        meta = self.crops.meta.get("normalization") or {"method": "none"}
        return Normalization(**meta)

    def model_io(self, cfg: ModelConfig, kind: str, channels: int) -> ModelIO:
        size = self.crops.crop_size
        return ModelIO(kind=kind, channels=channels, activation="identity", ndim=2, in_channels=cfg.in_channels,
                       divisor=list(cfg.divisor), tile=[size, size])

    def describe(self) -> str:
        p = self.params
        return (f"({len(self.rows)} of {len(self.crops)} {p.split} crops, {self.steps_per_epoch()} steps per epoch, "
                f"batch {p.batch_size})")
