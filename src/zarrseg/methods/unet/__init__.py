"""The ``unet`` learning method: 2D/3D U-Nets predicting boundaries, foreground or affinities.

Models, targets, losses, patch sampling, validation by the segment pipeline and BioImage.IO
export live in this folder; the registry entry below is all the rest of zarrseg sees.
"""

from __future__ import annotations

from ...learn.registry import MethodSpec
from .train_params import TrainParams  # (torch-free: the workflow reads specs while it plans)


def example(data: dict[str, str]) -> dict:
    """A small 3D boundary U-Net on the synthetic volume (smoke checks)."""
    item = {"image": data["image3d"], "labels": data["labels3d"]}
    return {"train": [item], "model": {"ndim": 3, "f_maps": 16, "depth": 3}, "patch_shape": [32, 64, 64],
            "batch_size": 2, "num_workers": 2}


METHOD = MethodSpec(
    name="unet",
    section="train",
    params=TrainParams,
    hooks="zarrseg.methods.unet.method:UNetMethod",
    build_model="zarrseg.methods.unet.checkpoint:build_from_config",
    data="labelled",
    inference="predict",
    postprocess="segment",
    summary="2D/3D U-Net: boundaries / foreground / affinities from labelled volumes (PlantSeg ch. 2)",
    example=example,
)
