"""The ``unet`` method's hooks: seeded patches, Adam + ReduceLROnPlateau, ARand validation.

Model selection (``best.pt``) follows ``val_metric``: threshold + connected-components ARand,
validation loss, or ARand / VOI of the full segment pipeline on a validation crop (training
loss without validation data). Patch ``i`` is always drawn from generator ``(seed, i)``, so
the stream is the same for any number of DataLoader workers and after a resume. On CUDA an
out-of-memory probe (``memory.fit_to_memory``) picks the batch / patch that fits. Everything
around the step (AMP, DDP, budgets, history, checkpoints, resume) is the learning loop's.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import numpy as np
import torch
from skimage.measure import label as connected_components

from ... import ome
from ...errors import ConfigError
from ...learn.checkpoint import ModelIO
from ...learn.loop import Export, Method, Parts, unwrap
from ...learn.params import LoopParams
from ...params import to_dict
from ...predict.tiled import predict_array
from .checkpoint import load_init
from .data import PatchDataset, Volume, open_volumes, parse_roi
from .losses import Loss
from .memory import fit_to_memory
from .models import ModelConfig, build_model, count_parameters
from .targets import make_target
from .train_params import TrainParams

log = logging.getLogger(__name__)

METRIC_KEY = {
    "arand": "val_arand",
    "loss": "val_loss",
    "segment_arand": "val_seg_arand",
    "segment_voi": "val_seg_voi",
}


def adapted_rand_error(seg: np.ndarray, gt: np.ndarray) -> float:
    """ARand error (elf), ignoring ground-truth label 0 (membrane / unlabelled)."""
    from elf.evaluation import rand_index

    if not np.any(gt != 0):
        return float("nan")
    are, _ri = rand_index(seg.astype(np.uint64), gt.astype(np.uint64), ignore_gt=[0])
    return float(are)


def segment_by_threshold(prob: np.ndarray, target: str, threshold: float) -> np.ndarray:
    """The thesis' validation segmentation: threshold, then connected components."""
    if target == "affinities":
        prob = prob.mean(axis=0, keepdims=True)
    inside = prob[0] > threshold if target == "foreground" else prob[0] < threshold
    return connected_components(inside, connectivity=1)


def model_io(cfg: ModelConfig, target: str, patch: list[int] | None) -> ModelIO:
    return ModelIO(
        kind=target,
        channels=cfg.out_channels,
        activation="sigmoid",
        ndim=cfg.ndim,
        in_channels=cfg.in_channels,
        divisor=list(cfg.divisor),
        tile=None if patch is None else list(patch),
    )


class UNetMethod(Method):
    """A 2D/3D U-Net trained on patches of labelled volumes (boundaries, foreground, affinities)."""

    metric_names = tuple(METRIC_KEY.values())
    resume_ignores = ("loop", "num_workers")
    steps_extendable = True  # plateau schedule, a patch stream indexed by step: a longer run continues exactly

    def __init__(self, params: TrainParams, ctx):
        super().__init__(params, ctx)
        self.batch_size = params.batch_size
        self.patch = list(params.patch)
        cfg = params.model
        if any(p % d for p, d in zip(self.patch, cfg.divisor, strict=True)):
            raise ConfigError(
                f"train.patch_shape {self.patch} must be a multiple of {list(cfg.divisor)} "
                f"(2**(depth-1)) on every axis"
            )

    # --- setup --------------------------------------------------------------------------------
    def build(self) -> Parts:
        p = self.params
        self.train_volumes = open_volumes(p.train, p, "train.train")
        self.val_volumes = open_volumes(p.val, p, "train.val") if p.val else []
        self.voxel_size = training_voxel_size(self.train_volumes, p.model.ndim)
        model = build_model(p.model)
        if p.init:
            loaded = load_init(model, p.init, p.model, "train.init")
            log.info("train.init: %d weight tensors from %s", len(loaded), p.init)
        self.model = self.ctx.ddp(model)
        self.loss_fn = Loss(p.loss)
        opt = p.optimizer
        optimizer = torch.optim.Adam(
            self.model.parameters(), lr=opt.lr, weight_decay=opt.weight_decay, betas=tuple(opt.betas)
        )
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=opt.lr_factor, patience=opt.lr_patience
        )
        return Parts({"model": self.model}, optimizer, scheduler, scheduler_on="eval", min_lr=opt.min_lr)

    def describe(self) -> str:
        p = self.params
        return (
            f"({p.model.name} {p.model.ndim}D, {count_parameters(self.model)} parameters, "
            f"patch {self.patch}, batch {self.batch_size})"
        )

    def total_steps(self) -> int:
        p = self.params
        if p.epochs is None:
            return p.loop.steps
        voxels = sum(int(np.prod(v.roi_shape)) for v in self.train_volumes)
        per_epoch = max(1, math.ceil(voxels / np.prod(self.patch) / self.batch_size))
        return min(p.loop.steps, p.epochs * per_epoch)

    def on_device(self) -> None:
        if self.ctx.device.type == "cuda" and self.params.auto_batch:
            self.fit_memory()

    def fit_memory(self) -> None:
        """Largest batch / patch whose forward + backward fits (``memory.fit_to_memory``); all ranks agree."""
        model = unwrap(self.model)  # no gradient all-reduce during the probe: ranks probe independently
        cfg = self.params.model
        buffers = [b.detach().clone() for b in model.buffers()]  # BatchNorm statistics stay untouched

        def fits(batch: int, patch: list[int]) -> bool:
            try:
                x = torch.randn(batch, cfg.in_channels, *patch, device=self.ctx.device)
                with self.ctx.autocast():
                    out = model(x)
                out.float().mean().backward()
                return True
            except torch.cuda.OutOfMemoryError:
                return False
            finally:
                model.zero_grad(set_to_none=True)
                if self.ctx.device.type == "cuda":
                    torch.cuda.empty_cache()

        self.batch_size, self.patch = fit_to_memory(fits, self.batch_size, self.patch, cfg.divisor)
        with torch.no_grad():
            for b, saved in zip(model.buffers(), buffers, strict=True):
                b.copy_(saved)
        if self.ctx.world > 1:
            sizes = torch.tensor([self.batch_size, *self.patch], device=self.ctx.device)
            torch.distributed.all_reduce(sizes, op=torch.distributed.ReduceOp.MIN)
            self.batch_size, self.patch = int(sizes[0]), [int(v) for v in sizes[1:]]
        log.info("memory probe: batch %d, patch %s", self.batch_size, self.patch)

    # --- steps --------------------------------------------------------------------------------
    def batches(self, start: int):
        """Batches ``start..total`` of the seeded patch stream (rank r of a DDP run takes every r-th batch)."""
        total, world, rank = self.total_steps(), self.ctx.world, self.ctx.rank
        p = dataclasses.replace(self.params, patch_shape=self.patch)
        n_batches, b = total - start, self.batch_size
        ds = PatchDataset(self.train_volumes, p, n_batches * b * world, offset=start * b * world)
        if world > 1:
            idx = [i for k in range(n_batches) for i in range((k * world + rank) * b, (k * world + rank + 1) * b)]
            ds = torch.utils.data.Subset(ds, idx)
        return torch.utils.data.DataLoader(
            ds,
            batch_size=b,
            shuffle=False,
            num_workers=self.params.num_workers,
            pin_memory=self.ctx.device.type == "cuda",
        )

    def step(self, batch, step: int) -> dict[str, torch.Tensor]:
        x, y, m = (t.to(self.ctx.device, non_blocking=True) for t in batch)
        logits = self.model(x)
        return {"loss": self.loss_fn(logits, y, m)}

    # --- validation ---------------------------------------------------------------------------
    def evaluate(self, final: bool) -> dict[str, float]:
        if not self.val_volumes:
            return {}
        vs = self.params.val_segment
        segment = vs.enabled and ((self.ctx.n_evals + 1) % vs.every == 0 or final)
        return self.validate(segment)

    def selection_score(self, scores: dict[str, float], train_loss: float) -> float | None:
        score = scores.get(METRIC_KEY[self.params.val_metric], float("nan"))
        if math.isnan(score):
            if self.params.val_metric.startswith("segment"):
                return None  # a validation without the segment run neither selects nor schedules
            return train_loss
        return score

    def validate(self, segment: bool = False) -> dict[str, float]:
        """Validation scores (means over volumes / slices): threshold + connected-components ARand,
        loss, and with ``segment`` ARand / VOI of the full segment pipeline on each volume's crop."""
        p = self.params
        model = unwrap(self.model)
        model.eval()
        scores, losses, seg_arand, seg_voi = [], [], [], []
        for vol in self.val_volumes:
            image = vol.image[vol.roi]
            gt = vol.labels[vol.roi]
            x = _normalised(image, vol, p)
            slicewise = p.model.ndim == 2 and x.ndim == 3
            pairs = [(x[z], gt[z]) for z in range(x.shape[0])] if slicewise else [(x, gt)]
            probs = []
            for xi, gi in pairs:
                prob = predict_array(
                    model, xi, self.io(), self.patch, device=self.ctx.device, batch_size=self.batch_size,
                    amp=self.ctx.amp,
                )
                probs.append(prob)
                scores.append(adapted_rand_error(segment_by_threshold(prob, p.target.kind, p.val_threshold), gi))
                target, mask = make_target(gi, p.target)
                q = torch.from_numpy(prob).clamp(1e-6, 1 - 1e-6)[None]
                with torch.no_grad():
                    losses.append(
                        float(
                            self.loss_fn(
                                torch.log(q / (1 - q)),
                                torch.from_numpy(target)[None],
                                torch.from_numpy(mask)[None],
                            )
                        )
                    )
            if segment:
                from .val_segment import boundary_map, segment_scores

                prob = np.stack(probs, axis=1) if slicewise else probs[0]  # (C, *roi shape)
                crop = parse_roi(p.val_segment.roi, gt.shape, "train.val_segment")
                out = segment_scores(
                    boundary_map(prob, p.target.kind)[crop],
                    gt[crop],
                    p.val_segment,
                    scale=ome.open_image(vol.item.image).spatial_scale,
                    slicewise=slicewise,
                    work_dir=self.ctx.out_dir,
                )
                seg_arand.append(out["arand"])
                seg_voi.append(out["voi"])
        return {
            "val_arand": _nanmean(scores),
            "val_loss": _nanmean(losses),
            "val_seg_arand": _nanmean(seg_arand),
            "val_seg_voi": _nanmean(seg_voi),
        }

    # --- state and export ---------------------------------------------------------------------
    def row_extras(self) -> dict[str, float]:
        return {"batch_size": self.batch_size}

    def state(self) -> dict:
        return {"batch_size": self.batch_size, "patch": list(self.patch)}

    def load_state(self, state: dict) -> None:
        self.batch_size = int(state.get("batch_size", self.batch_size))
        self.patch = list(state.get("patch", self.patch))

    def io(self) -> ModelIO:
        return model_io(self.params.model, self.params.target.kind, self.patch)

    def export(self) -> Export:
        params = to_dict(self.params)
        params["patch_shape"], params["batch_size"] = list(self.patch), self.batch_size
        return Export(
            module=self.model,
            model_config=dataclasses.asdict(self.params.model),
            io=self.io(),
            normalization=self.params.normalization,
            params=params,
            extra={} if self.voxel_size is None else {"voxel_size": self.voxel_size},
        )


def training_voxel_size(volumes: list[Volume], ndim: int) -> list[float] | None:
    """µm per voxel of the training images along the model's axes (predict rescales other images to it).

    None, with a warning, when an image's voxel size is unknown; the first image's, with a warning,
    when the images disagree.
    """
    from ...predict.rescale import SAME_SCALE, image_voxel_size

    sizes = []
    for vol in volumes:
        size = image_voxel_size(ome.open_image(vol.item.image))
        if size is None:
            log.warning(
                "train: %s has no known voxel size (1 µm fallback): the model records none and predict "
                "cannot rescale other images to it",
                vol.item.image,
            )
            return None
        sizes.append(size[-ndim:])
    if any(max(a / b, b / a) > SAME_SCALE for s in sizes[1:] for a, b in zip(s, sizes[0], strict=True)):
        log.warning("train: the training images have different voxel sizes %s; the model records %s µm", sizes, sizes[0])
    return sizes[0]


def _nanmean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def _normalised(image: np.ndarray, vol: Volume, params: TrainParams) -> np.ndarray:
    from ...normalize import apply

    return apply(image, vol.stats, params.normalization)


def train(params: TrainParams, out_dir: str | Path, resume: bool | str = False) -> dict:
    """Train a U-Net (``zarrseg train --method unet``)."""
    from ...learn.loop import train as train_method

    return train_method("unet", params, out_dir, resume)


__all__ = ["LoopParams", "UNetMethod", "adapted_rand_error", "segment_by_threshold", "train"]
