"""Semi-supervised contrastive segmentation (Zwijghuizen 2023, after Hu et al. 2021).

Two learning methods pretrain the U-Net on crops of a crop store (``zarrseg crops``):
``contrastive_global`` (stage 1, SimCLR of the encoder + MLP head) and ``contrastive_local``
(stage 2, pixel-level supervised contrastive learning of the whole U-Net, from stage 1's
encoder). Stage 3, segmentation fine-tuning, is the ``unet`` method started from stage 2
(``train.init: model:contrastive_local``) with a BCE / SSIM / SSIM-MAE + Dice loss.
"""

from __future__ import annotations

from ...learn.registry import MethodSpec
from ..unet.checkpoint import build_from_config
from .global_stage import GlobalMethod, GlobalParams
from .local_stage import LocalMethod, LocalParams
from .models import build_global

GLOBAL = MethodSpec(
    name="contrastive_global",
    params=GlobalParams,
    hooks=GlobalMethod,
    build_model=build_global,
    data="crops",
    postprocess="cluster",
    summary="stage 1 of contrastive pretraining: SimCLR of a U-Net encoder + MLP head on crops (Zwijghuizen §3.4.1)",
)

LOCAL = MethodSpec(
    name="contrastive_local",
    params=LocalParams,
    hooks=LocalMethod,
    build_model=build_from_config,
    data="crops",
    postprocess="cluster",
    summary="stage 2: pixel-level supervised contrastive learning of the U-Net from stage 1 (Zwijghuizen §3.4.2)",
)

__all__ = ["GLOBAL", "LOCAL", "GlobalParams", "LocalParams"]
