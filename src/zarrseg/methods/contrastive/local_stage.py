"""Stage 2, local supervised contrastive learning (``contrastive_local``, Zwijghuizen §3.4.2).

The full U-Net with a 1 x 1 convolution head (``embedding_dim`` channels) starts from stage 1's
encoder (``init``, required; ``freeze_encoder``: keep it fixed) and learns pixel embeddings from
two augmented views (brightness, blur, noise: no translation or zoom, which would move the
labelled pixels) of labelled crops with the pixel-level supervised contrastive loss (Eq. 3.4,
temperature 0.07) on pixels sampled by blocks or by stride. ``best.pt`` is that U-Net; the
segmentation U-Net (``train.init``) loads all of it but the head.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import torch

from ...errors import ConfigError
from ...learn.checkpoint import read
from ...learn.loop import Export, Parts, unwrap
from ...learn.params import LoopParams
from ..unet.checkpoint import init_path, load_init
from ..unet.models import UNet
from .augment import ViewAugment, make_view
from .common import CropMethod, CropStageParams, pretrain_loop
from .losses import MAX_PAIRS, local_contrastive
from .models import unet_config


@dataclass
class LocalParams(CropStageParams):
    """Stage 2 (config section ``contrastive_local``); defaults: thesis Table 4.2 (GPU size)."""

    SECTION = "contrastive_local"

    init: str | None = None  # stage-1 checkpoint (contrastive_global best.pt; workflow: model:contrastive_global)
    freeze_encoder: bool = False  # keep stage 1's encoder fixed (weights and batch-norm statistics)
    embedding_dim: int = 128  # channels of the 1 x 1 convolution head
    temperature: float = 0.07  # temperature of Eq. 3.4
    sampling: Literal["block", "stride"] = "block"  # which pixels are contrasted together
    block_size: int = 16  # block: each block_size^2 window across the batch's views is one set
    stride: int = 4  # stride: every stride-th pixel in y and x of all views is one set
    max_pairs: int = MAX_PAIRS  # similarity entries held at once (larger sets are computed in row chunks)
    batch_size: int = 8  # labelled crops per step (two views each)
    epochs: int | None = 8  # passes over the used crops (null: loop.steps steps)
    augment: ViewAugment = field(default_factory=ViewAugment)  # brightness, blur, noise
    # steps, checkpoint cadence, budgets, device, AMP, seed (epochs set the length; steps is a cap)
    loop: LoopParams = field(default_factory=pretrain_loop)

    def validate(self) -> None:
        super().validate()
        if not self.init:
            raise ConfigError(
                "contrastive_local.init: the local stage starts from a stage-1 checkpoint "
                "(contrastive_global best.pt; in the workflow model:contrastive_global), none given"
            )
        if self.augment.translate or self.augment.zoom:
            raise ConfigError("contrastive_local.augment: translate and zoom would move the labelled pixels; set 0")
        if min(self.block_size, self.stride, self.batch_size, self.embedding_dim) < 1:
            raise ConfigError("contrastive_local: block_size, stride, batch_size and embedding_dim must be >= 1")


class LocalMethod(CropMethod):
    """Eq. 3.4 between the pixel embeddings of two views of labelled crops."""

    labelled = True

    def build(self) -> Parts:
        p = self.params
        self.open_crops()
        stage1 = read(init_path(p.init))
        cfg = dataclasses.replace(unet_config(stage1["model_config"]), out_channels=p.embedding_dim)
        model = UNet(cfg)
        load_init(model, p.init, cfg, "contrastive_local.init", methods=("contrastive_global",))
        if p.freeze_encoder:
            model.encoders.requires_grad_(False)
        self.config, self.model = cfg, self.ctx.ddp(model)
        trainable = [q for q in self.model.parameters() if q.requires_grad]
        optimizer = torch.optim.Adam(trainable, lr=p.lr, weight_decay=p.weight_decay)
        return Parts({"model": self.model}, optimizer)

    def train_mode(self) -> None:
        self.model.train()
        if self.params.freeze_encoder:  # frozen means batch-norm statistics too
            unwrap(self.model).encoders.eval()

    def step(self, batch, step: int) -> dict[str, torch.Tensor]:
        image, mask = batch
        p = self.params
        g = self.ctx.generator(step, salt=5)
        views = torch.cat([make_view(image, p.augment, g), make_view(image, p.augment, g)])
        features = self.model(views)
        labels = torch.cat([mask, mask])
        loss = local_contrastive(features, labels, p.temperature, p.sampling, p.stride, p.block_size, p.max_pairs)
        return {"loss": loss}

    def export(self) -> Export:
        return Export(
            module=self.model,
            model_config=dataclasses.asdict(self.config),
            io=self.model_io(self.config, "embeddings", self.params.embedding_dim),
            normalization=self.normalization(),
        )
