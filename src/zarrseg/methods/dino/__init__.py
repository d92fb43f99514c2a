"""The ``dino`` learning method: DINO self-distillation pretraining of a ViT (features, clustering)."""

from __future__ import annotations

from typing import Any

from ...learn.registry import MethodSpec
from .params import PretrainParams  # (torch-free: the workflow reads specs while it plans)


def example(data: dict[str, str]) -> dict:
    """A small ViT pretrained on tiles of the synthetic image (smoke checks)."""
    return {"images": [data["image2d"]], "vit": {"patch_size": 8, "embed_dim": 192, "depth": 4, "num_heads": 3,
            "img_size": 96}, "sample_size": 96, "global_crop_size": 96, "local_crop_size": 48, "n_local_crops": 4,
            "out_dim": 4096, "hidden_dim": 512, "bottleneck_dim": 128, "batch_size": 32, "warmup_steps": 10}


METHOD = MethodSpec(
    name="dino",
    section="pretrain",
    params=PretrainParams,
    hooks="zarrseg.methods.dino.method:DINOMethod",
    build_model="zarrseg.ssl.vit:build_from_config",
    data="images",
    inference="features",
    postprocess="cluster",
    summary="DINO self-distillation of a ViT on unlabelled tiles; patch features for clustering (Zöngür §3.3)",
    example=example,
)

__all__ = ["METHOD", "PretrainParams", "pretrain"]


def __getattr__(attr: str) -> Any:  # ``pretrain`` imports torch: only when asked for
    if attr == "pretrain":
        from .method import pretrain

        return pretrain
    raise AttributeError(attr)
