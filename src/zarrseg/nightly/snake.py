"""Running the project's Snakemake workflow for one night, and reading back what it did.

The nightly command never re-implements the workflow: it writes a sample sheet of the night's
acquisitions, runs ``snakemake ... samples`` (every sample's own outputs) through the chosen
profile, so ``profiles/slurm`` submits to the cluster, and asks Snakemake itself
(``--summary``) which outputs are complete afterwards.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

import zarrseg

from ..errors import ConfigError
from .guard import GROUP_FILE

TARGET = "samples"  # rules/describe.smk: every sample's own outputs, nothing experiment-wide


def repo_root() -> Path:
    """The checkout the library runs from (its workflow/, rules/, config/ and profiles/)."""
    root = Path(zarrseg.__file__).resolve().parents[2]
    if not (root / "workflow" / "Snakefile").is_file():
        raise ConfigError(f"no workflow/Snakefile next to the zarrseg package ({root}); run from a checkout")
    return root


def resolve_profile(profile: str) -> Path:
    """A profile folder: as given (relative to the current folder), else ``profiles/<name>`` of the checkout."""
    for candidate in (Path(profile), repo_root() / "profiles" / profile):
        if (candidate / "config.yaml").is_file():
            return candidate.resolve()
    known = sorted(p.parent.name for p in (repo_root() / "profiles").glob("*/config.yaml"))
    raise ConfigError(f"profile {profile!r} not found (a folder with config.yaml, or one of {known})")


@dataclass
class Workflow:
    """How this night calls Snakemake: working directory, config files, profile, extra arguments."""

    workdir: Path
    configfiles: list[Path]
    profile: Path
    extra: list[str] = field(default_factory=list)

    def prepare(self) -> None:
        """The working directory holds the checkout's config/ (defaults, experiments) and Snakemake's state."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(repo_root() / "config", self.workdir / "config", dirs_exist_ok=True)

    def command(self, *args: str) -> list[str]:
        """``args`` start with the target; options taking several values come last (``--configfile``)."""
        return [sys.executable, "-m", "snakemake", *args[:1], "--snakefile", str(repo_root() / "workflow" / "Snakefile"),
                "--directory", str(self.workdir), "--profile", str(self.profile), *args[1:], *self.extra,
                "--configfile", *map(str, self.configfiles)]

    def env(self) -> dict[str, str]:
        """Rules call ``python -m zarrseg``: this interpreter first on PATH, this checkout's src importable."""
        src = str(repo_root() / "src")
        path = os.environ.get("PYTHONPATH")
        return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                "PYTHONPATH": f"{src}{os.pathsep}{path}" if path else src, "ZARRSEG_NO_PROGRESS": "1"}

    def run(self, args: list[str], log: Path) -> tuple[int, str]:
        """Run Snakemake with ``args``; its output goes to ``log`` (appended) and is returned."""
        log.parent.mkdir(parents=True, exist_ok=True)
        # Snakemake writes straight into the log: readable while a long night runs, and kept when
        # the night is killed (it was held in memory until Snakemake ended)
        with open(log, "a") as fh:
            fh.write(f"$ snakemake {' '.join(args)}\n")
            fh.flush()
            start = fh.tell()
            # a process group of its own, recorded while it runs: the next night stops it if this
            # process is killed alone (guard.stop_orphaned_group); an interrupt here stops it at once
            proc = subprocess.Popen(self.command(*args), cwd=self.workdir, env=self.env(), stdout=fh,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            group = self.workdir / GROUP_FILE
            group.write_text(f"{proc.pid}\n")
            try:
                proc.wait()
            except BaseException:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                proc.wait()
                raise
            finally:
                if proc.returncode is not None:
                    group.unlink(missing_ok=True)
        with open(log, "rb") as fh:
            fh.seek(start)
            out = fh.read().decode(errors="replace")
        with open(log, "a") as fh:
            fh.write("\n")
        return proc.returncode, out

    def summary(self, log: Path) -> pd.DataFrame:
        """Snakemake's own view of every output of the night's samples (status, plan, rule, log)."""
        code, text = self.run([TARGET, "--summary", "--rerun-triggers", "mtime"], log)
        start = text.find("output_file\t")
        if code != 0 or start < 0:
            return pd.DataFrame(columns=["output_file", "rule", "log-file(s)", "status", "plan"])
        return pd.read_csv(io.StringIO(text[start:]), sep="\t", dtype=str).fillna("")


def check_snakemake_args(extra: list[str]) -> None:
    """Refuse, before any work, extra Snakemake arguments its own parser rejects, or a dry run
    (which would leave every acquisition of the night unprocessed and counted as failed)."""
    from snakemake.cli import get_argument_parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parsed = get_argument_parser().parse_args([TARGET, *extra])
    except SystemExit:
        message = next((line.split("error:", 1)[1].strip() for line in err.getvalue().splitlines()
                        if "error:" in line), "not valid Snakemake arguments")
        raise ConfigError(f"--snakemake-args {' '.join(extra)!r}: {message}") from None
    if getattr(parsed, "dryrun", False):
        raise ConfigError("--snakemake-args: a dry run (-n) processes nothing; use 'snakemake -n' directly to preview")


def job_counts(text: str) -> dict[str, int]:
    """Jobs per rule from the "Job stats" table Snakemake prints before running (empty: nothing to do)."""
    counts: dict[str, int] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() != "Job stats:":
            continue
        for row in lines[i + 3:]:
            parts = row.split()
            if len(parts) != 2 or not parts[1].isdigit() or parts[0] == "total":
                break
            counts[parts[0]] = counts.get(parts[0], 0) + int(parts[1])
        break  # the first table: the plan of this run
    return counts


def last_error_line(text: str) -> str:
    """The last line of Snakemake's output that says why it stopped (one line)."""
    lines = text.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i]
        if any(key in line for key in ("Error", "error:", "Exception", "exception")):
            if line.rstrip().endswith(":"):  # a header ("WorkflowError:"): its message is on the next line
                line += " " + next((n.strip() for n in lines[i + 1:] if n.strip()), "")
            return " ".join(line.split())
    return "Snakemake failed (see the night's snakemake.log)"
