"""The one U-Net trainer: seeded patches, Adam + ReduceLROnPlateau, ARand validation, checkpoints.

Writes ``MODEL_DIR/last.pt`` (every validation, for ``--resume``), ``best.pt`` (best by
``val_metric``: threshold + CC ARand, validation loss, or ARand / VOI of the full segment
pipeline on a validation crop; training loss without validation data), ``metrics.csv`` and,
when the ``tensorboard`` package is installed, TensorBoard events. On CPU a run is reproducible
for a given seed and thread count, and a resumed run continues the uninterrupted one exactly
(patch ``i`` is always drawn from generator ``(seed, i)``). On CUDA: AMP (float16 + GradScaler
or bfloat16), cudnn.benchmark, an out-of-memory probe (``memory.fit_to_memory``), and DDP over
all visible devices (``distributed``: spawned by ``train()``, or launched with ``torchrun``).
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

from .. import ome
from ..errors import ConfigError, InputError
from ..parallel import progress_bar
from ..params import to_dict
from .checkpoint import read_checkpoint, save_checkpoint
from .data import PatchDataset, Volume, open_volumes, parse_roi
from .distributed import backend_for
from .inference import predict_array, resolve_device
from .losses import Loss
from .memory import fit_to_memory
from .models import build_model, count_parameters
from .targets import make_target
from .train_params import TrainParams

log = logging.getLogger(__name__)

METRIC_FIELDS = [
    "iteration",
    "train_loss",
    "val_arand",
    "val_loss",
    "val_seg_arand",
    "val_seg_voi",
    "lr",
    "seconds",
    "batch_size",
]
SCORES = ("val_arand", "val_loss", "val_seg_arand", "val_seg_voi")
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


class Trainer:
    def __init__(self, params: TrainParams, out_dir: str | Path, resume: bool = False):
        self.params, self.out_dir, self.resume = params, Path(out_dir), resume
        self.rank = int(os.environ.get("RANK", "0"))
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        if self.world > 1:  # one process per device; the CPU (gloo) when CUDA is absent or not wanted
            local = int(os.environ.get("LOCAL_RANK", "0"))
            use_cuda = params.device != "cpu" and torch.cuda.is_available()
            self.device = torch.device(f"cuda:{local}" if use_cuda else "cpu")
            if use_cuda:
                torch.cuda.set_device(self.device)
        else:
            self.device = resolve_device(params.device)
        if params.threads:
            torch.set_num_threads(params.threads)
        self.amp_dtype = torch.bfloat16 if params.amp_dtype == "bfloat16" else torch.float16
        # float16 autocast is a CUDA feature; bfloat16 autocast also runs on CPUs
        self.amp = params.amp and (self.device.type == "cuda" or self.amp_dtype == torch.bfloat16)
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
            if not torch.distributed.is_initialized():  # torchrun: rendezvous from the environment
                torch.distributed.init_process_group(backend_for(self.device))
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.loss_fn = Loss(p.loss)
        opt = p.optimizer
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=opt.lr, weight_decay=opt.weight_decay, betas=tuple(opt.betas)
        )
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=opt.lr_factor, patience=opt.lr_patience
        )
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.amp and self.amp_dtype == torch.float16 and self.device.type == "cuda"
        )
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

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp)

    # --- CUDA memory probe --------------------------------------------------------------------
    def _probe_memory(self) -> None:
        if self.device.type == "cuda" and self.params.auto_batch:
            self._fit_memory()

    def _fit_memory(self) -> None:
        """Largest batch / patch whose forward + backward fits (``memory.fit_to_memory``); all ranks agree."""
        model = self._unwrap()  # no gradient all-reduce during the probe: ranks probe independently
        cfg = self.params.model
        buffers = [b.detach().clone() for b in model.buffers()]  # BatchNorm statistics stay untouched

        def fits(batch: int, patch: list[int]) -> bool:
            try:
                x = torch.randn(batch, cfg.in_channels, *patch, device=self.device)
                with self._autocast():
                    out = model(x)
                out.float().mean().backward()
                return True
            except torch.cuda.OutOfMemoryError:
                return False
            finally:
                model.zero_grad(set_to_none=True)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()

        self.batch_size, self.patch = fit_to_memory(fits, self.batch_size, self.patch, cfg.divisor)
        with torch.no_grad():
            for b, saved in zip(model.buffers(), buffers, strict=True):
                b.copy_(saved)
        if self.world > 1:
            sizes = torch.tensor([self.batch_size, *self.patch], device=self.device)
            torch.distributed.all_reduce(sizes, op=torch.distributed.ReduceOp.MIN)
            self.batch_size, self.patch = int(sizes[0]), [int(v) for v in sizes[1:]]
        log.info("memory probe: batch %d, patch %s", self.batch_size, self.patch)

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
                with self._autocast():
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
                    train_loss = self._mean_over_ranks(running / max(n_running, 1))
                    running, n_running = 0.0, 0
                    final = self.iteration == total or over_time
                    stop = self._validate_and_checkpoint(train_loss, time.perf_counter() - t0, writer, final)
                    bar.set_postfix(loss=f"{train_loss:.4f}", best=f"{self.best:.4f}")
                    if stop or over_time:
                        stop_reason = stop or "time budget"
                        break
        if writer is not None:
            writer.close()
        return self._summary(stop_reason, time.perf_counter() - t0)

    def _over_budget(self, t0: float, cpu0: float) -> bool:
        p = self.params
        if p.max_minutes is None and p.max_cpu_minutes is None:
            return False
        wall = p.max_minutes is not None and time.perf_counter() - t0 > 60 * p.max_minutes
        cpu = p.max_cpu_minutes is not None and time.process_time() - cpu0 > 60 * p.max_cpu_minutes
        return bool(self._from_rank0(wall or cpu))  # every rank must stop at the same step

    def _mean_over_ranks(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return float(t[0]) / self.world

    def _from_rank0(self, value):
        """``value`` as computed by rank 0 (DDP ranks must take identical decisions); as is otherwise."""
        if self.world == 1:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

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

    def validate(self, segment: bool = False) -> dict[str, float]:
        """Validation scores (means over volumes / slices): threshold + connected-components ARand,
        loss, and with ``segment`` ARand / VOI of the full segment pipeline on each volume's crop."""
        p = self.params
        model = self._unwrap()
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
                    model,
                    xi,
                    p.model,
                    self.patch,
                    device=self.device,
                    batch_size=self.batch_size,
                    amp=self.amp,
                )
                probs.append(prob)
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
                    work_dir=self.out_dir,
                )
                seg_arand.append(out["arand"])
                seg_voi.append(out["voi"])
        model.train()
        return {
            "val_arand": _nanmean(scores),
            "val_loss": _nanmean(losses),
            "val_seg_arand": _nanmean(seg_arand),
            "val_seg_voi": _nanmean(seg_voi),
        }

    def _validate_and_checkpoint(
        self, train_loss: float, seconds: float, writer, final: bool = False
    ) -> str | None:
        p = self.params
        n_validation = len(self.rows) + 1
        segment = p.val_segment.enabled and (n_validation % p.val_segment.every == 0 or final)
        metrics = dict.fromkeys(SCORES, float("nan"))
        if self.val_volumes:
            metrics = self._from_rank0(self.validate(segment) if self.rank == 0 else None)
        score = metrics[METRIC_KEY[p.val_metric]]
        selecting = True
        if math.isnan(score):
            if p.val_metric.startswith("segment"):
                selecting = False  # a validation without the segment run neither selects nor schedules
            else:
                score = train_loss
        improved = False
        if selecting:
            self.scheduler.step(score)
            improved = score < self.best
            if improved:
                self.best, self.bad_validations = score, 0
            else:
                self.bad_validations += 1
        lr = self.optimizer.param_groups[0]["lr"]
        row = {
            "iteration": self.iteration,
            "train_loss": train_loss,
            **metrics,
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
            if improved or (final and not (self.out_dir / "best.pt").exists()):
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
                for key in ("train_loss", *SCORES, "lr"):
                    if not math.isnan(row[key]):
                        writer.add_scalar(key, row[key], self.iteration)
        log.info(
            "iteration %d: train loss %.4f, val ARand %.4f, segment ARand %.4f, lr %.2e%s",
            self.iteration,
            train_loss,
            metrics["val_arand"],
            metrics["val_seg_arand"],
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
        return read_metrics(self.out_dir)

    def _tensorboard(self):
        if not self.params.tensorboard or self.rank != 0:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard is optional
            log.info("tensorboard not installed: logging to metrics.csv only")
            return None
        return SummaryWriter(str(self.out_dir / "tensorboard"))


def read_metrics(out_dir: str | Path) -> list[dict]:
    """Rows of ``MODEL_DIR/metrics.csv`` (files of older versions lack the newer columns: NaN)."""
    path = Path(out_dir) / "metrics.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        row = {k: float(r[k]) if r.get(k) not in (None, "") else float("nan") for k in METRIC_FIELDS}
        row["iteration"], row["batch_size"] = int(row["iteration"]), int(row["batch_size"])
        out.append(row)
    return out


def _nanmean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def _normalised(image: np.ndarray, vol: Volume, params: TrainParams) -> np.ndarray:
    from ..normalize import apply

    return apply(image, vol.stats, params.normalization)


def spawn_world(params: TrainParams) -> int:
    """Number of DDP processes ``train`` should spawn: the CUDA device count when several are
    visible and wanted, else 0 (train in this process; also under torchrun, which spawned us)."""
    if not params.multi_gpu or params.device not in ("auto", "cuda") or "WORLD_SIZE" in os.environ:
        return 0
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return n_gpus if n_gpus > 1 else 0


def train(params: TrainParams, out_dir: str | Path, resume: bool = False) -> dict:
    """Train in this process, or in one DDP process per CUDA device when several are visible."""
    world = spawn_world(params)
    if not world:
        return Trainer(params, out_dir, resume).run()
    from .distributed import launch

    log.info("training on %d CUDA devices (DDP, one process each)", world)
    t0 = time.perf_counter()
    launch(params, out_dir, world, resume=resume, backend="nccl")
    last = read_checkpoint(Path(out_dir) / "last.pt")
    return {
        "iterations": int(last["iteration"]),
        "best": float(last.get("best", math.nan)),
        "stop": "ddp",
        "seconds": time.perf_counter() - t0,
        "rows": read_metrics(out_dir),
    }
