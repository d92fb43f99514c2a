"""Unattended nightly processing of new acquisitions (``zarrseg nightly``).

One run ("night"): take the single-instance guard (clearing a Snakemake lock that a killed run
left behind), scan the input folder for acquisitions that are complete and new or changed
(``scan``), run the Snakemake workflow over exactly those (``snake``), collect what each of them
gave (``outcome``), append it to the cumulative ``acquisitions.parquet`` (``history``) and write
the night's report with thumbnails (``report``). Everything is in ``RESULTS_DIR``.
"""

from .night import NightOptions, run_night

__all__ = ["NightOptions", "run_night"]
