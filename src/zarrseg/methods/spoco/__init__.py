"""The ``spoco`` learning method: instance segmentation from sparse object labels (thesis ch. 3).

An embedding U-Net f and its momentum copy g are trained on L_SSO (``losses``); their pixel
embeddings, predicted by ``zarrseg predict``, become instances by clustering (``zarrseg cluster``:
HDBSCAN, mean-shift, consistency clustering, affinity mutex watershed) or, for volumes of any
size, by the blockwise segment engine (``zarrseg segment`` on the embeddings).
"""

from __future__ import annotations

from ...learn.registry import MethodSpec
from .params import SpocoParams  # (torch-free: the workflow reads specs while it plans)


def example(data: dict[str, str]) -> dict:
    """A small 2D SPOCO@0.4 model (f and g: U-Net 16..128 features, D = 16) on the synthetic image (smoke checks)."""
    item = {"image": data["image2d"], "labels": data["labels2d"]}
    return {"train": [item], "val": [item], "model": {"ndim": 2, "f_maps": 16, "depth": 4}, "embedding_dim": 16,
            "patch_shape": [128, 128], "batch_size": 4, "object_fraction": 0.4, "momentum": 0.99,
            "val_patches": 2, "num_workers": 2}


METHOD = MethodSpec(
    name="spoco",
    section="spoco",
    params=SpocoParams,
    hooks="zarrseg.methods.spoco.method:SpocoMethod",
    build_model="zarrseg.methods.spoco.model:build_from_config",
    data="labelled",
    inference="predict",
    postprocess="cluster",
    summary="SPOCO pixel embeddings from sparse object labels; clustered into instances (Wolny thesis ch. 3)",
    example=example,
)

__all__ = ["METHOD", "SpocoParams"]
