"""The one U-Net trainer: seeded patches, Adam + ReduceLROnPlateau, ARand validation, checkpoints.

Writes ``MODEL_DIR/last.pt`` (every validation, for ``--resume``), ``best.pt`` (lowest
validation ARand, or training loss without validation data), ``metrics.csv`` and, when the
``tensorboard`` package is installed, TensorBoard events. On CPU a run is reproducible for a
given seed and thread count, and a resumed run continues the uninterrupted one exactly
(patch ``i`` is always drawn from generator ``(seed, i)``). On CUDA: AMP, cudnn.benchmark, an
out-of-memory probe that shrinks batch then patch, and DDP when launched with ``torchrun``.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from skimage.measure import label as connected_components

from ..errors import ConfigError, InputError
from ..parallel import progress_bar
from ..params import to_dict
from .checkpoint import read_checkpoint, save_checkpoint
from .data import PatchDataset, Volume, open_volumes
from .inference import predict_array, resolve_device
from .losses import Loss
from .models import ModelConfig, build_model, count_parameters
from .targets import make_target
from .train_params import TrainParams

log = logging.getLogger(__name__)

METRIC_FIELDS = ["iteration", "train_loss", "val_arand", "val_loss", "lr", "seconds", "batch_size"]


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


class Trainer:
    def __init__(self, params: TrainParams, out_dir: str | Path, resume: bool = False):
        self.params, self.out_dir, self.resume = params, Path(out_dir), resume
        self.rank = int(os.environ.get("RANK", "0"))
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.device = resolve_device(
            params.device if self.world == 1 else f"cuda:{os.environ.get('LOCAL_RANK', 0)}"
        )
        if params.threads:
            torch.set_num_threads(params.threads)
        self.amp = params.amp and self.device.type == "cuda"
        self.batch_size = params.batch_size
        self.patch = list(params.patch)
        cfg = params.model
        if any(p % d for p, d in zip(self.patch, cfg.divisor, strict=True)):
            raise ConfigError(
                f"train.patch_shape {self.patch} must be a multiple of {list(cfg.divisor)} "
                f"(2**(depth-1)) on every axis"
            )

    # --- setup --------------------------------------------------------------------------------
    def _build(self) -> None:
        p = self.params
        torch.manual_seed(p.seed)
        np.random.seed(p.seed)
        self.train_volumes = open_volumes(p.train, p, "train.train")
        self.val_volumes = open_volumes(p.val, p, "train.val") if p.val else []
        self.model = build_model(p.model).to(self.device)
        if self.world > 1:
            torch.distributed.init_process_group("nccl")
            self.model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=[self.device.index])
        self.loss_fn = Loss(p.loss)
        opt = p.optimizer
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=opt.lr, weight_decay=opt.weight_decay, betas=tuple(opt.betas)
        )
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=opt.lr_factor, patience=opt.lr_patience
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.iteration, self.best, self.bad_validations = 0, math.inf, 0
        self.rows: list[dict] = []
        log.info(
            "model %s %dD: %d parameters, patch %s, batch %d, device %s",
            p.model.name,
            p.model.ndim,
            count_parameters(self.model),
            self.patch,
            self.batch_size,
            self.device,
        )

    def _iterations(self) -> int:
        p = self.params
        if p.epochs is None:
            return p.iterations
        voxels = sum(int(np.prod(v.roi_shape)) for v in self.train_volumes)
        per_epoch = max(1, math.ceil(voxels / np.prod(self.patch) / self.batch_size))
        return min(p.iterations, p.epochs * per_epoch) if p.iterations else p.epochs * per_epoch

    def _restore(self) -> None:
        path = self.out_dir / "last.pt"
        ckpt = read_checkpoint(path)
        if ckpt.get("model_config") != dataclasses.asdict(self.params.model):
            raise InputError("cannot resume: the checkpoint's model config differs from train.model", path)
        self._unwrap().load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if "scaler" in ckpt:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.iteration = int(ckpt["iteration"])
        self.best = float(ckpt.get("best", math.inf))
        self.bad_validations = int(ckpt.get("bad_validations", 0))
        self.batch_size, self.patch = (
            int(ckpt.get("batch_size", self.batch_size)),
            list(ckpt.get("patch", self.patch)),
        )
        torch.set_rng_state(ckpt["torch_rng"])
        self.rows = [r for r in self._read_rows() if int(r["iteration"]) <= self.iteration]
        log.info("resuming from %s at iteration %d (best %.4f)", path, self.iteration, self.best)

    def _unwrap(self) -> torch.nn.Module:
        return getattr(self.model, "module", self.model)

    # --- CUDA memory probe --------------------------------------------------------------------
    def _probe_memory(self) -> None:
        """Try one forward/backward at the configured size; on OOM halve batch, then shrink the patch."""
        if self.device.type != "cuda" or not self.params.auto_batch:
            return
        div = self.params.model.divisor
        while True:
            try:
                x = torch.randn(
                    self.batch_size, self.params.model.in_channels, *self.patch, device=self.device
                )
                with torch.autocast("cuda", dtype=torch.float16, enabled=self.amp):
                    self.model(x).float().mean().backward()
                self.model.zero_grad(set_to_none=True)
                return
            except torch.cuda.OutOfMemoryError:
                self.model.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                if self.batch_size > 1:
                    self.batch_size //= 2
                else:
                    axis = int(np.argmax([p / d for p, d in zip(self.patch, div, strict=True)]))
                    if self.patch[axis] <= 2 * div[axis]:
                        raise ConfigError(
                            "the model does not fit in GPU memory even with batch 1 and a tiny patch"
                        ) from None
                    self.patch[axis] = max(div[axis], (self.patch[axis] // 2) // div[axis] * div[axis])
                log.warning(
                    "CUDA out of memory: retrying with batch %d, patch %s", self.batch_size, self.patch
                )

    # --- loop ---------------------------------------------------------------------------------
    def _loader(self, start: int, total: int) -> torch.utils.data.DataLoader:
        """Batches ``start..total`` of the seeded patch stream (rank r of a DDP run takes every r-th batch)."""
        p = dataclasses.replace(self.params, patch_shape=self.patch)
        n_batches, b = total - start, self.batch_size
        ds = PatchDataset(self.train_volumes, p, n_batches * b * self.world, offset=start * b * self.world)
        if self.world > 1:
            idx = [
                i
                for k in range(n_batches)
                for i in range((k * self.world + self.rank) * b, (k * self.world + self.rank + 1) * b)
            ]
            ds = torch.utils.data.Subset(ds, idx)
        return torch.utils.data.DataLoader(
            ds,
            batch_size=b,
            shuffle=False,
            num_workers=self.params.num_workers,
            pin_memory=self.device.type == "cuda",
        )

    def run(self) -> dict:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._build()
        if self.resume:
            self._restore()
        elif (self.out_dir / "last.pt").exists():
            raise ConfigError(
                f"{self.out_dir} already holds a training run; pass --resume or use a new folder"
            )
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self._probe_memory()
        total = self._iterations()
        writer = self._tensorboard()
        t0, cpu0 = time.perf_counter(), time.process_time()
        running, n_running = 0.0, 0
        stop_reason = "iterations"
        self.model.train()
        if self.iteration >= total:
            return self._summary("already complete", 0.0)
        with progress_bar(total - self.iteration, "train") as bar:
            bar.unit = "it"
            for x, y, m in self._loader(self.iteration, total):
                x, y, m = (t.to(self.device, non_blocking=True) for t in (x, y, m))
                self.optimizer.zero_grad(set_to_none=True)
                with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
                    logits = self.model(x)
                loss = self.loss_fn(logits, y, m)
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.iteration += 1
                running += float(loss.detach())
                n_running += 1
                bar.update(1)
                over_time = self._over_budget(t0, cpu0)
                if self.iteration % self.params.validate_every == 0 or self.iteration == total or over_time:
                    train_loss = running / max(n_running, 1)
                    running, n_running = 0.0, 0
                    stop = self._validate_and_checkpoint(train_loss, time.perf_counter() - t0, writer)
                    bar.set_postfix(loss=f"{train_loss:.4f}", best=f"{self.best:.4f}")
                    if stop or over_time:
                        stop_reason = stop or "time budget"
                        break
        if writer is not None:
            writer.close()
        return self._summary(stop_reason, time.perf_counter() - t0)

    def _over_budget(self, t0: float, cpu0: float) -> bool:
        p = self.params
        wall = p.max_minutes is not None and time.perf_counter() - t0 > 60 * p.max_minutes
        cpu = p.max_cpu_minutes is not None and time.process_time() - cpu0 > 60 * p.max_cpu_minutes
        return wall or cpu

    def _summary(self, reason: str, seconds: float) -> dict:
        log.info(
            "training stopped (%s) at iteration %d after %.1f s; best %.4f",
            reason,
            self.iteration,
            seconds,
            self.best,
        )
        return {
            "iterations": self.iteration,
            "best": self.best,
            "stop": reason,
            "seconds": seconds,
            "rows": self.rows,
        }

    def validate(self) -> tuple[float, float]:
        """(mean ARand error of threshold + connected components, mean loss) over validation volumes/slices."""
        p = self.params
        model = self._unwrap()
        model.eval()
        scores, losses = [], []
        for vol in self.val_volumes:
            image = vol.image[vol.roi]
            gt = vol.labels[vol.roi]
            x = _normalised(image, vol, p)
            if p.model.ndim == 2 and x.ndim == 3:
                pairs = [(x[z], gt[z]) for z in range(x.shape[0])]
            else:
                pairs = [(x, gt)]
            for xi, gi in pairs:
                prob = predict_array(
                    model,
                    xi,
                    p.model,
                    self.patch,
                    device=self.device,
                    batch_size=self.batch_size,
                    amp=self.amp,
                )
                scores.append(
                    adapted_rand_error(segment_by_threshold(prob, p.target.kind, p.val_threshold), gi)
                )
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
        model.train()
        scores = [s for s in scores if not math.isnan(s)]
        return (
            float(np.mean(scores)) if scores else float("nan"),
            float(np.mean(losses)) if losses else float("nan"),
        )

    def _validate_and_checkpoint(self, train_loss: float, seconds: float, writer) -> str | None:
        p = self.params
        arand, val_loss = self.validate() if self.val_volumes else (float("nan"), float("nan"))
        score = arand if p.val_metric == "arand" else val_loss
        score = score if not math.isnan(score) else train_loss
        self.scheduler.step(score)
        lr = self.optimizer.param_groups[0]["lr"]
        improved = score < self.best
        if improved:
            self.best, self.bad_validations = score, 0
        else:
            self.bad_validations += 1
        row = {
            "iteration": self.iteration,
            "train_loss": train_loss,
            "val_arand": arand,
            "val_loss": val_loss,
            "lr": lr,
            "seconds": round(seconds, 3),
            "batch_size": self.batch_size,
        }
        self.rows.append(row)
        if self.rank == 0:
            self._write_rows()
            extra = self._state()
            save_checkpoint(
                self.out_dir / "last.pt",
                self.model,
                p.model,
                p.normalization,
                p.target.kind,
                self._train_dict(),
                **extra,
            )
            if improved:
                save_checkpoint(
                    self.out_dir / "best.pt",
                    self.model,
                    p.model,
                    p.normalization,
                    p.target.kind,
                    self._train_dict(),
                    **extra,
                )
            if writer is not None:
                for key in ("train_loss", "val_arand", "val_loss", "lr"):
                    if not math.isnan(row[key]):
                        writer.add_scalar(key, row[key], self.iteration)
        log.info(
            "iteration %d: train loss %.4f, val ARand %.4f, lr %.2e%s",
            self.iteration,
            train_loss,
            arand,
            lr,
            " (best)" if improved else "",
        )
        if p.early_stopping and self.bad_validations >= p.early_stopping:
            return "early stopping"
        if lr < p.optimizer.min_lr:
            return "learning rate below min_lr"
        return None

    def _train_dict(self) -> dict:
        d = to_dict(self.params)
        d["patch_shape"], d["batch_size"] = list(self.patch), self.batch_size
        return d

    def _state(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "iteration": self.iteration,
            "best": self.best,
            "bad_validations": self.bad_validations,
            "batch_size": self.batch_size,
            "patch": list(self.patch),
            "torch_rng": torch.get_rng_state(),
            "metrics": dict(self.rows[-1]) if self.rows else {},
        }

    def _write_rows(self) -> None:
        path = self.out_dir / "metrics.csv"
        tmp = path.with_name(".metrics.csv.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
            w.writeheader()
            w.writerows(self.rows)
        os.replace(tmp, path)

    def _read_rows(self) -> list[dict]:
        path = self.out_dir / "metrics.csv"
        if not path.exists():
            return []
        with open(path, newline="") as f:
            return [
                {
                    k: (float(v) if k not in ("iteration", "batch_size") else int(float(v)))
                    for k, v in r.items()
                }
                for r in csv.DictReader(f)
            ]

    def _tensorboard(self):
        if not self.params.tensorboard or self.rank != 0:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard is optional
            log.info("tensorboard not installed: logging to metrics.csv only")
            return None
        return SummaryWriter(str(self.out_dir / "tensorboard"))


def _normalised(image: np.ndarray, vol: Volume, params: TrainParams) -> np.ndarray:
    from ..normalize import apply

    return apply(image, vol.stats, params.normalization)


def train(params: TrainParams, out_dir: str | Path, resume: bool = False) -> dict:
    return Trainer(params, out_dir, resume).run()


__all__ = ["ModelConfig", "Trainer", "train"]
