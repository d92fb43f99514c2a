"""Semi-supervised contrastive segmentation (Zwijghuizen 2023, after Hu et al. 2021).

Two learning methods pretrain the U-Net on crops of a crop store (``zarrseg crops``):
``contrastive_global`` (stage 1, SimCLR of the encoder + MLP head) and ``contrastive_local``
(stage 2, pixel-level supervised contrastive learning of the whole U-Net, from stage 1's
encoder). Stage 3, segmentation fine-tuning, is the ``unet`` method started from stage 2
(``train.init: model:contrastive_local``) with a BCE / SSIM / SSIM-MAE + Dice loss.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import ConfigError
from ...learn.registry import MethodSpec
from .params import GlobalParams, LocalParams  # (torch-free: the workflow reads specs while it plans)


def example_crops(data: dict[str, str]) -> str:
    """A crop store of the synthetic 2D image for smoke checks (written once, next to the image):
    128-px crops, step 0.5, every other cell of ``labels2d`` as foreground (a binary mask)."""
    store = Path(data["image2d"]).parent / "contrastive_crops"
    if not store.exists():
        from ... import ome
        from ...crops import CropParams, prepare_crops
        from ...params import load_params

        labels = ome.open_image(data["labels2d"]).data[...]
        mask = ((labels % 2) == 1).astype("uint8")
        path = store.parent / "contrastive_mask.ome.zarr"
        arr = ome.create_image(path, shape=mask.shape, dtype=mask.dtype, axes="yx", scale=[1.0, 1.0],
                               chunks=ome.chunk_shape("yx", mask.shape, [128, 128]), is_label=True)
        arr[...] = mask
        source = {"image": data["image2d"], "labels": str(path), "split": "pretrain", "name": "synthetic"}
        prepare_crops(load_params(CropParams, {"images": [source], "crop_size": 128, "step": 0.5,
                                               "min_foreground": 0.03}), store)
    return str(store)


def example_global(data: dict[str, str]) -> dict:
    """Stage 1 on crops of the synthetic image, a 16-feature 3-level U-Net (smoke checks)."""
    return {"crops": example_crops(data), "model": {"ndim": 2, "f_maps": 16, "depth": 3}, "projection_dim": 64,
            "batch_size": 16, "epochs": None}


def example_local(data: dict[str, str]) -> dict:
    """Stage 2 from the stage-1 model the smoke check trained before (``data["model:contrastive_global"]``)."""
    if "model:contrastive_global" not in data:
        raise ConfigError("contrastive_local example: train contrastive_global first (data['model:contrastive_global'])")
    return {"crops": example_crops(data), "init": data["model:contrastive_global"], "embedding_dim": 32,
            "block_size": 16, "batch_size": 8, "epochs": None}


GLOBAL = MethodSpec(
    name="contrastive_global",
    params=GlobalParams,
    hooks="zarrseg.methods.contrastive.global_stage:GlobalMethod",
    build_model="zarrseg.methods.contrastive.models:build_global",
    data="crops",
    inference="none",  # one embedding per crop: it initialises stage 2, it predicts no map
    postprocess="cluster",
    summary="stage 1 of contrastive pretraining: SimCLR of a U-Net encoder + MLP head on crops (Zwijghuizen §3.4.1)",
    example=example_global,
)

LOCAL = MethodSpec(
    name="contrastive_local",
    params=LocalParams,
    hooks="zarrseg.methods.contrastive.local_stage:LocalMethod",
    build_model="zarrseg.methods.unet.checkpoint:build_from_config",
    data="crops",
    postprocess="cluster",
    summary="stage 2: pixel-level supervised contrastive learning of the U-Net from stage 1 (Zwijghuizen §3.4.2)",
    example=example_local,
)

__all__ = ["GLOBAL", "LOCAL", "GlobalParams", "LocalParams"]
