"""DINO self-distillation pretraining of a ViT on one's own microscopy tiles.

Caron et al. 2021 (DINO): a student and a teacher ViT, each with a projection head, see
different crops of the same tile (two large *global* crops, several small *local* crops);
the student learns to match the teacher's centred and sharpened output distribution on the
global crops, and the teacher is an exponential moving average of the student. Learning
rate, weight decay and teacher momentum follow cosine schedules. timm provides the ViT;
the DINO training recipe itself exists in no installed library, hence this module.

The saved checkpoint is the teacher backbone in the format of ``vit.save_checkpoint``, so
``zarrseg features --checkpoint MODEL_DIR/checkpoint.pt`` uses it directly.
"""

from __future__ import annotations

import copy
import csv
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import ome
from ..errors import ConfigError
from ..params import to_dict
from .sampling import TileSampler
from .tiling import Preprocess
from .vit import ViTSpec, load_vit, save_checkpoint, select_device

log = logging.getLogger(__name__)


@dataclass
class PretrainParams:
    """Parameters of ``zarrseg pretrain`` (config section ``pretrain``)."""

    images: list[str] = field(default_factory=list)  # OME-Zarr training images
    vit: ViTSpec = field(default_factory=ViTSpec)
    preprocess: Preprocess = field(default_factory=Preprocess)
    init_checkpoint: str | None = None  # start from these weights instead of random init
    sample_size: int = 320  # side of the tile drawn from an image (pixels of the resized image)
    global_crop_size: int = 224
    local_crop_size: int = 96
    n_local_crops: int = 8
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.4)
    out_dim: int = 65536  # prototypes of the DINO head
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    batch_size: int = 32
    steps: int = 10000
    warmup_steps: int = 500
    lr: float = 5e-4  # peak, scaled by batch_size / 256 as in DINO
    min_lr: float = 1e-6
    weight_decay: tuple[float, float] = (0.04, 0.4)  # cosine from first to second
    teacher_momentum: tuple[float, float] = (0.996, 1.0)
    student_temp: float = 0.1
    teacher_temp: tuple[float, float] = (0.04, 0.04)  # linear warm-up over warmup_steps
    center_momentum: float = 0.9
    clip_grad: float = 3.0
    freeze_last_layer_steps: int = 100
    max_minutes: float | None = None  # stop (and save) after this wall time even if steps remain
    max_cpu_minutes: float | None = None  # stop (and save) after this CPU time of the process (all threads)
    checkpoint_every: int = 500
    device: str = "auto"
    amp: bool = True  # mixed precision on CUDA
    num_threads: int = 0  # torch CPU threads, 0: torch's default
    seed: int = 0

    def validate(self) -> None:
        for name in ("global_crop_size", "local_crop_size", "sample_size"):
            if getattr(self, name) % self.vit.patch_size:
                raise ConfigError(
                    f"pretrain.{name} must be a multiple of the patch size {self.vit.patch_size}"
                )
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError("pretrain.steps and pretrain.batch_size must be >= 1")
        if self.n_local_crops < 0:
            raise ConfigError("pretrain.n_local_crops must be >= 0")


class DINOHead(nn.Module):
    """MLP -> L2-normalised bottleneck -> weight-normalised prototypes (as in DINO)."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = nn.utils.parametrizations.weight_norm(
            nn.Linear(bottleneck_dim, out_dim, bias=False)
        )
        g = self.last_layer.parametrizations.weight.original0
        g.data.fill_(1.0)
        g.requires_grad = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


class MultiCrop(nn.Module):
    """Backbone + head applied to crops of different sizes (one forward per size)."""

    def __init__(self, backbone: nn.Module, head: DINOHead):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, crops: list[torch.Tensor]) -> torch.Tensor:
        out, i = [], 0
        while i < len(crops):  # consecutive crops of equal size share one forward
            j = i
            while j < len(crops) and crops[j].shape[-1] == crops[i].shape[-1]:
                j += 1
            out.append(
                self.backbone.forward_head(
                    self.backbone.forward_features(torch.cat(crops[i:j])), pre_logits=True
                )
            )
            i = j
        return self.head(torch.cat(out))


class DINOLoss(nn.Module):
    """Cross-entropy of student crops against the centred, sharpened teacher on the other global crops."""

    def __init__(self, out_dim: int, n_crops: int, student_temp: float, center_momentum: float):
        super().__init__()
        self.n_crops, self.student_temp, self.center_momentum = n_crops, student_temp, center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        s = (student / self.student_temp).chunk(self.n_crops)
        t = F.softmax((teacher - self.center) / teacher_temp, dim=-1).detach().chunk(2)
        total, n = 0.0, 0
        for iq, q in enumerate(t):
            for v in range(self.n_crops):
                if v == iq:
                    continue
                total = total + torch.sum(-q * F.log_softmax(s[v], dim=-1), dim=-1).mean()
                n += 1
        self.update_center(teacher)
        return total / n

    @torch.no_grad()
    def update_center(self, teacher: torch.Tensor) -> None:
        self.center.mul_(self.center_momentum).add_(
            teacher.mean(0, keepdim=True), alpha=1 - self.center_momentum
        )


def cosine(
    step: int, total: int, start: float, end: float, warmup: int = 0, warmup_start: float = 0.0
) -> float:
    """Linear warm-up then cosine decay from ``start`` to ``end`` (DINO's schedules)."""
    if step < warmup:
        return warmup_start + (start - warmup_start) * step / max(1, warmup)
    t = (step - warmup) / max(1, total - warmup)
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * min(1.0, t)))


class Augment:
    """Multi-crop augmentation of normalised (3, H, W) tiles for microscopy (no colour jitter).

    Crops come from torchvision; flips and 90-degree rotations (microscopy has no 'up'),
    brightness/contrast jitter and blur make the views differ in what does not matter.
    """

    def __init__(self, p: PretrainParams, seed: int):
        from torchvision.transforms import v2

        self.v2 = v2
        self.p = p
        self.gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.global_crop = v2.RandomResizedCrop(p.global_crop_size, scale=p.global_scale, antialias=True)
        self.local_crop = v2.RandomResizedCrop(p.local_crop_size, scale=p.local_scale, antialias=True)
        self.blur = v2.GaussianBlur(kernel_size=9, sigma=(0.1, 2.0))

    def _rand(self) -> float:
        return float(torch.rand(1, generator=self.gen))

    def _view(self, x: torch.Tensor, crop, blur_p: float) -> torch.Tensor:
        x = crop(x)
        if self._rand() < 0.5:
            x = x.flip(-1)
        x = torch.rot90(x, int(self._rand() * 4), dims=(-2, -1))
        x = x * (0.6 + 0.8 * self._rand()) + (self._rand() - 0.5) * 0.8
        if self._rand() < blur_p:
            x = self.blur(x)
        return x

    def __call__(self, batch: torch.Tensor) -> list[torch.Tensor]:
        views: list[list[torch.Tensor]] = [[] for _ in range(2 + self.p.n_local_crops)]
        for x in batch:
            views[0].append(self._view(x, self.global_crop, 1.0))
            views[1].append(self._view(x, self.global_crop, 0.1))
            for k in range(self.p.n_local_crops):
                views[2 + k].append(self._view(x, self.local_crop, 0.5))
        return [torch.stack(v) for v in views]


def _param_groups(model: nn.Module) -> list[dict]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if name.endswith(".bias") or param.ndim == 1 else decay).append(param)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def pretrain(params: PretrainParams, out_dir: str | Path) -> dict:
    """Run DINO pretraining; write ``checkpoint.pt`` (teacher ViT), ``history.csv``, ``params.yaml``.

    The output folder is written as ``<out_dir>.partial`` and renamed when training ends.
    Returns a summary (steps done, first/last loss, wall time).
    """
    import yaml

    if params.num_threads:
        torch.set_num_threads(params.num_threads)
    torch.manual_seed(params.seed)
    device = select_device(params.device)
    sampler = TileSampler(params.images, params.preprocess, params.sample_size, seed=params.seed)
    if params.init_checkpoint:
        backbone, spec, source = load_vit(params.vit, checkpoint=params.init_checkpoint)
    else:
        spec = params.vit
        from .vit import build_vit

        backbone, source = build_vit(spec), "random initialisation"
    log.info("pretrain: ViT %s from %s, %d images, device %s", spec, source, len(sampler.sources), device)
    student = MultiCrop(
        backbone, DINOHead(spec.embed_dim, params.out_dim, params.hidden_dim, params.bottleneck_dim)
    )
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad = False
    student.to(device).train()
    teacher.to(device).train()
    n_crops = 2 + params.n_local_crops
    criterion = DINOLoss(params.out_dim, n_crops, params.student_temp, params.center_momentum).to(device)
    optim = torch.optim.AdamW(_param_groups(student), lr=0.0)
    augment = Augment(params, params.seed)
    use_amp = params.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    peak_lr = params.lr * params.batch_size / 256
    history: list[dict] = []
    t0, c0 = time.perf_counter(), time.process_time()
    with ome.atomic_output(out_dir) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "params.yaml").write_text(yaml.safe_dump(to_dict(params), sort_keys=False))
        for step in range(params.steps):
            lr = cosine(step, params.steps, peak_lr, params.min_lr, params.warmup_steps)
            wd = cosine(step, params.steps, params.weight_decay[0], params.weight_decay[1])
            optim.param_groups[0].update(lr=lr, weight_decay=wd)
            optim.param_groups[1].update(lr=lr)
            t_temp = cosine(
                min(step, params.warmup_steps),
                params.warmup_steps,
                params.teacher_temp[1],
                params.teacher_temp[1],
                params.warmup_steps,
                params.teacher_temp[0],
            )
            crops = [c.to(device, non_blocking=True) for c in augment(sampler.batch(params.batch_size))]
            with torch.autocast(device.type, enabled=use_amp):
                t_out = teacher(crops[:2])
                s_out = student(crops)
                loss = criterion(s_out.float(), t_out.float(), t_temp)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"DINO loss is {loss.item()} at step {step}; lower pretrain.lr")
            optim.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optim)
            if params.clip_grad:
                nn.utils.clip_grad_norm_(student.parameters(), params.clip_grad)
            if step < params.freeze_last_layer_steps:
                for p in student.head.last_layer.parameters():
                    p.grad = None
            scaler.step(optim)
            scaler.update()
            m = cosine(step, params.steps, params.teacher_momentum[0], params.teacher_momentum[1])
            with torch.no_grad():
                for ps, pt in zip(student.parameters(), teacher.parameters(), strict=True):
                    pt.mul_(m).add_(ps.detach(), alpha=1 - m)
            elapsed = time.perf_counter() - t0
            history.append(
                {
                    "step": step,
                    "loss": loss.item(),
                    "lr": lr,
                    "momentum": m,
                    "seconds": elapsed,
                    "cpu_seconds": time.process_time() - c0,
                }
            )
            if step % 10 == 0:
                log.info(
                    "pretrain step %d/%d loss %.4f lr %.2e (%.0f s)",
                    step,
                    params.steps,
                    loss.item(),
                    lr,
                    elapsed,
                )
            last = over_budget(params.max_minutes, params.max_cpu_minutes, elapsed, time.process_time() - c0)
            if (step + 1) % params.checkpoint_every == 0 or last or step + 1 == params.steps:
                _save(tmp, teacher.backbone, spec, history, step + 1)
            if last:
                log.warning(
                    "pretrain: time budget used up after %.1f min at step %d of %d",
                    elapsed / 60,
                    step + 1,
                    params.steps,
                )
                break
    return {
        "steps": len(history),
        "first_loss": history[0]["loss"],
        "last_loss": history[-1]["loss"],
        "seconds": time.perf_counter() - t0,
    }


def over_budget(max_minutes: float | None, max_cpu_minutes: float | None, wall: float, cpu: float) -> bool:
    """True once the wall-time or CPU-time budget (minutes; None: unlimited) is used up."""
    return (max_minutes is not None and wall > max_minutes * 60) or (
        max_cpu_minutes is not None and cpu > max_cpu_minutes * 60
    )


def write_history(folder: Path, history: list[dict]) -> None:
    """``history.csv``: one row per training step (loss, learning rate, wall and CPU seconds)."""
    with open(folder / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def _save(folder: Path, backbone: nn.Module, spec: ViTSpec, history: list[dict], steps: int) -> None:
    save_checkpoint(folder / "checkpoint.pt", backbone, spec, steps=steps, method="dino")
    write_history(folder, history)
    log.info(
        "pretrain: checkpoint after %d steps, mean loss of last 10 %.4f",
        steps,
        float(np.mean([h["loss"] for h in history[-10:]])),
    )
