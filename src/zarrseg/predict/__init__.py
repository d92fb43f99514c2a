"""The predict stage: a dense map of an OME-Zarr image, blockwise, blended, resumable.

``intensity`` (the membrane stain itself) needs no torch; ``model`` runs any registered
learning method's checkpoint through the tiled predictor (``tiled``), with the output's
channels and activation taken from the checkpoint.
"""
