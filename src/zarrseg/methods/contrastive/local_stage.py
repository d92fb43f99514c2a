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

import torch

from ...learn.checkpoint import read
from ...learn.loop import Export, Parts, unwrap
from ..unet.checkpoint import init_path, load_init
from ..unet.models import UNet
from .augment import make_view
from .common import CropMethod
from .losses import local_contrastive
from .models import unet_config


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
