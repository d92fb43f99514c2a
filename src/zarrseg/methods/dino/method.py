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
from itertools import count
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...learn.checkpoint import vit_io
from ...learn.loop import Export, Method, Parts, unwrap
from ...ssl.sampling import TileSampler
from ...ssl.vit import ViTSpec, build_vit, load_vit
from .model import Augment, DINOHead, DINOLoss, MultiCrop, cosine, param_groups
from .params import PretrainParams

log = logging.getLogger(__name__)


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
