"""Scoring segmentations: one sparse overlap table, every metric of the theses, tidy tables and figures.

``contingency`` builds the (segment id, ground-truth id, voxel count) table blockwise; ``instance``
and ``semantic`` turn it into metrics with the formulas of scikit-image / scikit-learn / elf;
``tables`` writes the long-format experiment tables and summaries; ``plots`` draws the figures.
"""

from .contingency import Contingency, blockwise_contingency
from .instance import LOWER_IS_BETTER, instance_metrics
from .semantic import binary_metrics, clustering_metrics, combine_annotators

__all__ = [
    "LOWER_IS_BETTER",
    "Contingency",
    "binary_metrics",
    "blockwise_contingency",
    "clustering_metrics",
    "combine_annotators",
    "instance_metrics",
]
