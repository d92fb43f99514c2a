"""Scoring segmentations: one sparse overlap table, every metric of the theses, tidy tables and figures.

``contingency`` builds the (segment id, ground-truth id, voxel count) table blockwise; ``instance``
and ``semantic`` turn it into metrics with the formulas of scikit-image / scikit-learn / elf;
``tables`` writes the long-format experiment tables and summaries; ``plots`` draws the figures.
"""

import importlib

# Exported lazily (PEP 562): `describe` and `table` jobs import this package for one helper, and
# the metric modules pull in scikit-learn and scipy.stats (~3 s of every such job's start-up).
_EXPORTS = {
    "LOWER_IS_BETTER": "instance",
    "Contingency": "contingency",
    "binary_metrics": "semantic",
    "blockwise_contingency": "contingency",
    "clustering_metrics": "semantic",
    "combine_annotators": "semantic",
    "instance_metrics": "instance",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
