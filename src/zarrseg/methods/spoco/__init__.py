"""The ``spoco`` learning method: instance segmentation from sparse object labels (thesis ch. 3).

An embedding U-Net f and its momentum copy g are trained on L_SSO (``losses``); their pixel
embeddings, predicted by ``zarrseg predict``, become instances by clustering (``zarrseg cluster``:
HDBSCAN, mean-shift, consistency clustering, affinity mutex watershed) or, for volumes of any
size, by the blockwise segment engine (``zarrseg segment`` on the embeddings).
"""

from __future__ import annotations

from ...learn.registry import MethodSpec
from .method import SpocoMethod
from .model import build_from_config
from .params import SpocoParams

METHOD = MethodSpec(
    name="spoco",
    section="spoco",
    params=SpocoParams,
    hooks=SpocoMethod,
    build_model=build_from_config,
    data="labelled",
    inference="predict",
    postprocess="cluster",
    summary="SPOCO pixel embeddings from sparse object labels; clustered into instances (Wolny thesis ch. 3)",
)

__all__ = ["METHOD", "SpocoParams"]
