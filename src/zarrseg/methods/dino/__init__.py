"""The ``dino`` learning method: DINO self-distillation pretraining of a ViT (features, clustering)."""

from __future__ import annotations

from ...learn.registry import MethodSpec
from ...ssl.vit import build_from_config
from .method import DINOMethod, PretrainParams, pretrain

METHOD = MethodSpec(
    name="dino",
    section="pretrain",
    params=PretrainParams,
    hooks=DINOMethod,
    build_model=build_from_config,
    data="images",
    inference="features",
    postprocess="cluster",
    summary="DINO self-distillation of a ViT on unlabelled tiles; patch features for clustering (Zöngür §3.3)",
)

__all__ = ["METHOD", "PretrainParams", "pretrain"]
