"""The ``finetune`` learning method: reconstruction fine-tuning of a (DINO) ViT's last blocks."""

from __future__ import annotations

from ...learn.registry import MethodSpec
from ...ssl.vit import build_from_config
from .method import FinetuneMethod, FinetuneParams, finetune


def example(data: dict[str, str]) -> dict:
    """Reconstruction fine-tuning of the given ViT on tiles of the synthetic image (smoke checks)."""
    return {"images": [data["image2d"]], "checkpoint": data["vit"], "sample_size": 96, "batch_size": 16}


METHOD = MethodSpec(
    name="finetune",
    section="finetune",
    params=FinetuneParams,
    hooks=FinetuneMethod,
    build_model=build_from_config,
    data="images",
    inference="features",
    postprocess="cluster",
    summary="L1 reconstruction fine-tuning of a ViT's last blocks with an up-sampling decoder (Zöngür §3.4)",
    example=example,
)

__all__ = ["METHOD", "FinetuneParams", "finetune"]
