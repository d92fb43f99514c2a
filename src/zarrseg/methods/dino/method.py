"""The ``dino`` method: DINO self-distillation pretraining of a ViT on one's own microscopy tiles.

The exported model is the teacher backbone (a timm ViT), which ``zarrseg features`` turns into
patch-feature volumes for clustering. Schedules (learning rate, weight decay, teacher momentum
and temperature) are functions of the step, and the teacher, the DINO centre, the optimiser
and every RNG are in ``last.pt``: a killed 24-hour pretraining resumes where it stopped.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import nn

from ...errors import ConfigError
from ...learn.checkpoint import vit_io
from ...learn.loop import Export, Method, Parts, unwrap
from ...learn.params import COMMON_RENAMES, LoopParams
from ...ssl.sampling import TileSampler
from ...ssl.tiling import Preprocess
from ...ssl.vit import ViTSpec, build_vit, load_vit
from .model import Augment, DINOHead, DINOLoss, MultiCrop, cosine, param_groups

log = logging.getLogger(__name__)


@dataclass
class PretrainParams:
    """Parameters of the ``dino`` method (config section ``pretrain``)."""

    images: list[str] = field(default_factory=list)  # OME-Zarr training images
    vit: ViTSpec = field(default_factory=ViTSpec)
    preprocess: Preprocess = field(default_factory=Preprocess)
    weights: Literal["none", "hub"] = "none"  # start from timm's DINO ViT-S/8 hub weights (needs network)
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
    # steps, checkpoint cadence, budgets, device, AMP, seed (0 steps: publish the initial weights)
    loop: LoopParams = field(default_factory=lambda: LoopParams(checkpoint_every=500, eval_every=500))

    RENAMED: ClassVar[dict] = {
        **COMMON_RENAMES,
        "steps": "loop.steps",
        "checkpoint_every": ["loop.checkpoint_every", "loop.eval_every"],
        "num_threads": "loop.threads",
    }

    def validate(self) -> None:
        for name in ("global_crop_size", "local_crop_size", "sample_size", "out_dim", "hidden_dim", "bottleneck_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"pretrain.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("global_crop_size", "local_crop_size", "sample_size"):
            if getattr(self, name) % self.vit.patch_size:
                raise ConfigError(f"pretrain.{name} must be a multiple of the patch size {self.vit.patch_size}")
        if self.batch_size < 1:
            raise ConfigError("pretrain.batch_size must be >= 1")
        if self.n_local_crops < 0:
            raise ConfigError("pretrain.n_local_crops must be >= 0")


def initial_vit(spec: ViTSpec, checkpoint: str | None, weights: str) -> tuple[nn.Module, ViTSpec, str]:
    """The ViT a method starts from: a checkpoint, hub weights, or random initialisation (said so)."""
    if checkpoint or weights == "hub":
        return load_vit(spec, checkpoint=checkpoint, weights=weights)
    return build_vit(spec), spec, "random initialisation"


class DINOMethod(Method):
    """Student / EMA-teacher self-distillation on multi-crop views of random tiles."""

    select_best = False  # the DINO loss does not rank checkpoints: publish the final teacher
    resume_ignores = ("loop",)

    def build(self) -> Parts:
        p = self.params
        self.sampler = TileSampler(p.images, p.preprocess, p.sample_size, seed=p.loop.seed)
        backbone, self.spec, self.source = initial_vit(p.vit, p.init_checkpoint, p.weights)
        head = DINOHead(self.spec.embed_dim, p.out_dim, p.hidden_dim, p.bottleneck_dim)
        student = MultiCrop(backbone, head)
        self.teacher = copy.deepcopy(student).to(self.ctx.device)
        for q in self.teacher.parameters():
            q.requires_grad = False
        self.student = self.ctx.ddp(student)
        self.criterion = DINOLoss(p.out_dim, 2 + p.n_local_crops, p.student_temp, p.center_momentum)
        self.criterion.to(self.ctx.device)
        self.augment = Augment(p, p.loop.seed)
        self.peak_lr = p.lr * p.batch_size / 256
        self.optimizer = torch.optim.AdamW(param_groups(unwrap(self.student)), lr=0.0)
        modules = {"student": self.student, "teacher": self.teacher, "criterion": self.criterion}
        return Parts(modules, self.optimizer)

    def describe(self) -> str:
        return f"(ViT {dataclasses.asdict(self.spec)} from {self.source}, {len(self.sampler.sources)} images)"

    def batches(self, start: int):
        p, ctx = self.params, self.ctx
        for step in count(start):
            rng = np.random.default_rng([p.loop.seed, step, ctx.rank])
            tiles = self.sampler.batch(p.batch_size, rng)
            yield [c.to(ctx.device, non_blocking=True) for c in self.augment(tiles, ctx.generator(step, salt=7))]

    def before_step(self, step: int) -> None:
        p, total = self.params, self.total_steps()
        lr = cosine(step, total, self.peak_lr, p.min_lr, p.warmup_steps)
        wd = cosine(step, total, p.weight_decay[0], p.weight_decay[1])
        groups = self.optimizer.param_groups
        groups[0].update(lr=lr, weight_decay=wd)
        groups[1].update(lr=lr)
        self.teacher_temp = cosine(
            min(step, p.warmup_steps), p.warmup_steps, p.teacher_temp[1], p.teacher_temp[1], p.warmup_steps,
            p.teacher_temp[0],
        )

    def step(self, batch, step: int) -> dict[str, torch.Tensor]:
        t_out = self.teacher(batch[:2])
        s_out = self.student(batch)
        return {"loss": self.criterion(s_out.float(), t_out.float(), self.teacher_temp)}

    def before_update(self, step: int) -> None:
        p = self.params
        student = unwrap(self.student)
        if p.clip_grad:
            nn.utils.clip_grad_norm_(student.parameters(), p.clip_grad)
        if step < p.freeze_last_layer_steps:
            for q in student.head.last_layer.parameters():
                q.grad = None

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        p = self.params
        self.momentum = cosine(step, self.total_steps(), p.teacher_momentum[0], p.teacher_momentum[1])
        for ps, pt in zip(unwrap(self.student).parameters(), self.teacher.parameters(), strict=True):
            pt.mul_(self.momentum).add_(ps.detach(), alpha=1 - self.momentum)

    def history_extras(self) -> dict[str, float]:
        return {"momentum": getattr(self, "momentum", float("nan"))}

    def export(self) -> Export:
        spec = dataclasses.asdict(self.spec)
        return Export(module=self.teacher.backbone, model_config=spec, io=vit_io(spec), extra={"init": self.source})


def pretrain(params: PretrainParams, out_dir: str | Path, resume: bool | str = False) -> dict:
    """DINO pretraining into ``out_dir`` (``best.pt``: the teacher ViT, for ``zarrseg features``)."""
    from ...learn.loop import train

    return train("dino", params, out_dir, resume)
