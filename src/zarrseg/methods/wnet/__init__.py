"""The ``wnet`` learning method: fully unsupervised sparse W-Net (Leng et al. 2023).

A W-Net learns a K-channel soft segmentation of one or a few images without labels, from a
reconstruction loss (whole image, augmented patches, or none) and segmentation losses on pixels
or on a superpixel graph (soft N-cut, similarity, continuity). The nine model types of the
paper's Table 1 are values of ``graph`` x ``segmentation`` x ``reconstruction``
(``params.MODEL_TYPES``). Its encoder predicts whole volumes slice by slice through
``zarrseg predict``; labels are the argmax over K (``zarrseg cluster``, method ``argmax``).
"""

from __future__ import annotations

from typing import Any

from ...learn.registry import MethodSpec
from .params import MODEL_TYPES, WNetParams, model_type_values  # (torch-free: read while the workflow plans)


def example(data: dict[str, str]) -> dict:
    """A small sparse W-Net on the synthetic RGB image (smoke checks, benchmarks/gpu_check.py)."""
    return {"images": [data["rgb"]], "model": {"f_maps": 16, "depth": 4}, "superpixels": {"n_segments": 1000},
            "epochs": None}


METHOD = MethodSpec(
    name="wnet",
    section="wnet",
    params=WNetParams,
    hooks="zarrseg.methods.wnet.method:WNetMethod",
    build_model="zarrseg.methods.unet.checkpoint:build_from_config",  # the encoder is a plain 2D U-Net
    data="images",
    inference="predict",
    postprocess="argmax",
    summary="fully unsupervised W-Net: soft N-cut / similarity / continuity on pixels or superpixels (Leng et al. 2023)",
    example=example,
)

__all__ = ["METHOD", "MODEL_TYPES", "WNetParams", "model_type_values", "train"]


def __getattr__(name: str) -> Any:  # ``train`` imports torch: only when asked for
    if name == "train":
        from .method import train

        return train
    raise AttributeError(name)
