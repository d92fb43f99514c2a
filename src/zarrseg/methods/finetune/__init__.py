"""The ``finetune`` learning method: reconstruction fine-tuning of a (DINO) ViT's last blocks."""

from __future__ import annotations

from typing import Any

from ...learn.registry import MethodSpec
from .params import FinetuneParams  # (torch-free: the workflow reads specs while it plans)


def example(data: dict[str, str]) -> dict:
    """Reconstruction fine-tuning of the given ViT on tiles of the synthetic image (smoke checks)."""
    return {"images": [data["image2d"]], "checkpoint": data["vit"], "sample_size": 96, "batch_size": 16}


METHOD = MethodSpec(
    name="finetune",
    section="finetune",
    params=FinetuneParams,
    hooks="zarrseg.methods.finetune.method:FinetuneMethod",
    build_model="zarrseg.ssl.vit:build_from_config",
    data="images",
    inference="features",
    postprocess="cluster",
    summary="L1 reconstruction fine-tuning of a ViT's last blocks with an up-sampling decoder (Zöngür §3.4)",
    example=example,
)

__all__ = ["METHOD", "FinetuneParams", "finetune"]


def __getattr__(attr: str) -> Any:  # ``finetune`` imports torch: only when asked for
    if attr == "finetune":
        from .method import finetune

        return finetune
    raise AttributeError(attr)
