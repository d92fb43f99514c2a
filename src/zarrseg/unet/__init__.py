"""Boundary prediction: U-Net models, training and tiled, blended inference over Zarr.

Submodules import torch; this package file does not, so ``zarrseg predict`` with the
``intensity`` method stays torch-free.
"""
