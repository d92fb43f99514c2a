"""The ``spoco`` method's hooks: f trained on L_SSO, g its exponential moving average.

Each step: two views of the same patches (shared geometry, own intensity noise) go through f and
(without gradient) g; ``losses.sso_loss`` compares f's embeddings with the labelled objects and
with g's in the unlabelled region; after the optimiser step g moves towards f
(``theta_g <- m theta_g + (1 - m) theta_f``). g runs in training mode like f (batch statistics,
as MoCo's key encoder); its parameters, buffers and the loss' anchor draws are all in last.pt or
drawn from (seed, step), so a killed run resumes exactly. Without ``val`` data the final
weights are kept; with it, the validation loss L_SO (dense labels) selects best.pt and drives
ReduceLROnPlateau.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import torch

from ...errors import ConfigError
from ...learn.checkpoint import ModelIO
from ...learn.loop import Export, Method, Parts, unwrap
from ...params import to_dict
from ..unet.data import open_volumes
from ..unet.models import build_model, count_parameters
from .losses import sso_loss
from .model import Embedder, ema_update, model_config, momentum_copy
from .params import SpocoParams
from .sampling import Selection, TwoViewPatches, select_objects, selection_for

log = logging.getLogger(__name__)


class SpocoMethod(Method):
    """Pixel embeddings from sparse object masks (L_SSO) with a momentum network."""

    metric_names = ("val_loss",)
    resume_ignores = ("loop", "num_workers")
    steps_extendable = True  # plateau schedule, a patch stream indexed by step: a longer run continues exactly

    def __init__(self, params: SpocoParams, ctx):
        super().__init__(params, ctx)
        cfg = params.model
        if any(p % d for p, d in zip(params.patch, cfg.divisor, strict=True)):
            raise ConfigError(
                f"spoco.patch_shape {params.patch} must be a multiple of {list(cfg.divisor)} (2**(depth-1)) on every axis"
            )
        self.weights = params.loss

    # --- setup --------------------------------------------------------------------------------
    def build(self) -> Parts:
        p = self.params
        self.volumes = open_volumes(p.train, p, "spoco.train")
        self.selection = selection_for(self.volumes, p)
        self.val_volumes = open_volumes(p.val, p, "spoco.val") if p.val else []
        f = build_model(p.model)
        self.g = momentum_copy(f).to(self.ctx.device)
        self.f = self.ctx.ddp(f)
        opt = p.optimizer
        optimizer = torch.optim.Adam(self.f.parameters(), lr=opt.lr, weight_decay=opt.weight_decay, betas=tuple(opt.betas))
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=opt.lr_factor, patience=opt.lr_patience
        )
        return Parts({"f": self.f, "g": self.g}, optimizer, scheduler, scheduler_on="eval", min_lr=opt.min_lr)

    def describe(self) -> str:
        p = self.params
        return (
            f"(U-Net {p.model.ndim}D, {count_parameters(self.f)} parameters, D={p.embedding_dim}, "
            f"patch {p.patch}, batch {p.batch_size}, {self.selection.n_objects} labelled objects)"
        )

    # --- steps --------------------------------------------------------------------------------
    def batches(self, start: int):
        total, world, rank, b = self.total_steps(), self.ctx.world, self.ctx.rank, self.params.batch_size
        ds = TwoViewPatches(self.volumes, self.params, self.selection, (total - start) * b * world, offset=start * b * world)
        if world > 1:
            idx = [i for k in range(total - start) for i in range((k * world + rank) * b, (k * world + rank + 1) * b)]
            ds = torch.utils.data.Subset(ds, idx)
        return torch.utils.data.DataLoader(
            ds, batch_size=b, shuffle=False, num_workers=self.params.num_workers,
            pin_memory=self.ctx.device.type == "cuda",
        )

    def step(self, batch, step: int) -> dict[str, torch.Tensor]:
        x_f, x_g, ids = (t.to(self.ctx.device, non_blocking=True) for t in batch)
        emb_f = self.f(x_f)
        emb_g = None
        if self.weights.consistency:
            with torch.no_grad():
                emb_g = self.g(x_g)
        return sso_loss(emb_f, emb_g, ids, self.weights, self.ctx.generator(step, salt=3))

    def after_step(self, step: int) -> None:
        ema_update(self.g, unwrap(self.f), self.params.momentum)

    # --- validation ---------------------------------------------------------------------------
    def evaluate(self, final: bool) -> dict[str, float]:
        """L_SO (pull, push, instance; Eq. 3.6) of f on fixed validation patches with their dense labels."""
        if not self.val_volumes:
            return {}
        if not hasattr(self, "val_patches"):
            sel = _dense_selection(self.val_volumes)
            ds = TwoViewPatches(self.val_volumes, self.params, sel, self.params.val_patches, augment=False, seed_offset=7919)
            self.val_patches = [ds[i] for i in range(len(ds))]
        f = unwrap(self.f)
        f.eval()
        w = dataclasses.replace(self.weights, unlabelled_push=0.0, consistency=0.0)
        losses = []
        with torch.no_grad():
            for i, (x, _, ids) in enumerate(self.val_patches):
                emb = f(x[None].to(self.ctx.device))
                out = sso_loss(emb, None, ids[None].to(self.ctx.device), w, torch.Generator().manual_seed(i))
                losses.append(float(out["loss"]))
        return {"val_loss": float(np.mean(losses))}

    def selection_score(self, scores: dict[str, float], train_loss: float) -> float | None:
        score = scores.get("val_loss", float("nan"))
        return None if math.isnan(score) else score

    # --- export -------------------------------------------------------------------------------
    def io(self) -> ModelIO:
        p = self.params
        return ModelIO(
            kind="embeddings",
            channels=p.embedding_dim * (2 if p.export_momentum else 1),
            activation="identity",
            ndim=p.model.ndim,
            in_channels=p.model.in_channels,
            divisor=list(p.model.divisor),
            tile=list(p.patch),
        )

    def export(self) -> Export:
        p = self.params
        module = Embedder(unwrap(self.f), self.g if p.export_momentum else None)
        return Export(
            module=module,
            model_config=model_config(p.model, p.embedding_dim, p.export_momentum, p.loss.delta_v, p.loss.delta_d),
            io=self.io(),
            normalization=p.normalization,
            params=to_dict(p),
        )


def _dense_selection(volumes) -> Selection:
    """Every object and the background of the validation volumes."""
    from ..unet.data import label_ids

    return select_objects([label_ids(v.labels, v.roi) for v in volumes], "full")
