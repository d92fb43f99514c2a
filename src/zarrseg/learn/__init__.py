"""The learning core: one training loop, one checkpoint format and a registry of methods.

A learning method (U-Net, DINO, ...) is a folder under ``zarrseg/methods`` (or a module of
its own, registered through the ``zarrseg.methods`` entry point group or named in the config)
that supplies per-step hooks (``learn.loop.Method``) and one ``learn.registry.MethodSpec``.
The loop owns everything else: device, AMP, DDP ranks, budgets, seeding, history,
``last.pt`` / ``best.pt`` and exact resume.
"""

from pathlib import Path


def model_file(path: str | Path) -> str | Path:
    """A model folder written by ``zarrseg train`` (it holds ``best.pt``) means its ``best.pt``;
    anything else is returned as given (a checkpoint file, a BioImage.IO package)."""
    folder = Path(path)
    if folder.is_dir() and (folder / "best.pt").is_file() and not (folder / "rdf.yaml").is_file():
        return str(folder / "best.pt")
    return path
