"""The crop-preparation stage (``zarrseg crops``) and the reader learning methods use."""

from .params import CropParams, CropSource
from .prepare import prepare_crops
from .store import CropSet, check_fraction

__all__ = ["CropParams", "CropSet", "CropSource", "check_fraction", "prepare_crops"]
