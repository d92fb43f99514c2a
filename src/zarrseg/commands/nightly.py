"""Process the new acquisitions of a folder, unattended: the one command for cron, scrontab or a systemd timer.

  zarrseg nightly INPUT_DIR -o RESULTS_DIR [--config FILE] [--profile PROFILE] [--quiet-period SECONDS]

Each run ("night") takes the acquisitions of INPUT_DIR that are complete and new or changed, runs
the Snakemake workflow over them (through PROFILE: profiles/slurm submits every job to the
cluster) and writes RESULTS_DIR/nights/<date>/report.md and report.html with thumbnails, and
appends to the cumulative RESULTS_DIR/acquisitions.parquet.

  complete   a <file>.done marker exists, or the file (and its ground truth <stem>_labels.<ext>)
             was not modified for the quiet period; and its reader's structural check passes
             (CZI directory, TIFF IFD chain, ...). Younger files are "waiting", never ingested
             half-written.
  new        never processed, or changed since: size or modification time differ and so does the
             sha256. Processed acquisitions are not touched again (no reruns for code or parameter
             changes unless --rerun-drifted).
  isolated   a corrupt or failing acquisition is reported with its one-line reason and the rest of
             the night completes; it is retried on a later night only if the file changes (or
             with --rerun-drifted); a job that dies silently (out of memory) is retried 3 nights.
  scenes     every scene (position) of a multi-scene file is its own sample <file>_<scene>.
  safe       one run at a time per RESULTS_DIR (a file lock); a Snakemake lock left by a killed
             run is cleared automatically.

Exit codes: 0 night complete, 1 some acquisition failed (see the report), 2 bad command line or
configuration, 75 another nightly run of RESULTS_DIR is active (nothing done), 143 / 130 stopped
by SIGTERM / Ctrl-C (the night's report and rows are written first; what did not finish is retried).
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

HELP = "process the new, complete acquisitions of a folder unattended (cron / scrontab / systemd timer)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input_dir", metavar="INPUT_DIR", type=Path, help="folder the microscope writes to")
    parser.add_argument("-o", "--output", dest="results_dir", metavar="RESULTS_DIR", type=Path, required=True,
                        help="results, reports and the cumulative acquisitions.parquet")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="workflow config on top of config/config.yaml (stages, storage, experiment)")
    parser.add_argument("--profile", default="local", metavar="PROFILE",
                        help="Snakemake profile: a folder, or a name under profiles/: local (default) or slurm")
    parser.add_argument("--quiet-period", type=float, default=120.0, metavar="SECONDS",
                        help="seconds without modification before a file without .done marker counts as "
                             "complete (default: 120)")
    parser.add_argument("--night", metavar="YYYY-MM-DD", help="date the night is filed under (default: today)")
    parser.add_argument("--rerun-drifted", action="store_true",
                        help="look at every acquisition again, not only new or changed files: rerun the "
                             "outputs whose code or parameters changed (Snakemake decides; the rest stays), "
                             "and retry files that failed (e.g. after fixing ingest.axes in --config)")
    parser.add_argument("--snakemake-args", default="", metavar="ARGS",
                        help="more Snakemake arguments, e.g. \"--cores 8\"")


def _exit_on_term(signum: int, frame: object) -> None:
    """SIGTERM (a cron or systemd time limit) ends the night like Ctrl-C: the running Snakemake's
    process group is stopped on the way out instead of being left to the next night."""
    raise SystemExit(128 + signum)


def run(args: argparse.Namespace) -> int:
    import signal

    from ..errors import ConfigError
    from ..nightly import NightOptions, run_night

    try:
        snakemake_args = shlex.split(args.snakemake_args)
    except ValueError as err:  # an unclosed quote
        raise ConfigError(f"--snakemake-args {args.snakemake_args!r}: {err}") from err
    from ..nightly.snake import check_snakemake_args

    check_snakemake_args(snakemake_args)  # every night, even one with nothing new: a broken cron line shows
    signal.signal(signal.SIGTERM, _exit_on_term)
    result = run_night(NightOptions(
        input_dir=args.input_dir, results_dir=args.results_dir, config=args.config, profile=args.profile,
        quiet_period=args.quiet_period, night=args.night, rerun_all=args.rerun_drifted,
        snakemake_args=snakemake_args))
    shown = result.shown or result.rows  # what the report says, so the two never disagree
    counts = {s: sum(r["status"] == s for r in shown) for s in ("processed", "failed", "waiting", "unchanged")}
    print(f"{result.folder / 'report.md'}: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return 1 if result.failed else 0
