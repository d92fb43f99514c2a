"""One night: guard, scan, run the workflow over the new acquisitions, record, report."""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from ..errors import ConfigError, OutputError
from ..ingest.params import IngestParams
from ..params import deep_update, load_params
from ..workflow import IMAGE_SUFFIXES, acquisition_samples, sample_name, scene_labels, stage_params
from .guard import single_instance, stale_snakemake_locks, stop_orphaned_group
from .history import History
from .outcome import SampleOutcome, outcome
from .report import write_report
from .scan import DONE_SUFFIX, Acquisition, scan
from .snake import TARGET, Workflow, job_counts, last_error_line, repo_root, resolve_profile

log = logging.getLogger(__name__)


@dataclass
class NightOptions:
    input_dir: Path
    results_dir: Path
    config: Path | None = None  # the user's config (overrides config/config.yaml of the checkout)
    profile: str = "local"  # a profile folder or a name under profiles/
    quiet_period: float = 120.0  # seconds without modification before a file counts as complete
    night: str | None = None  # the date the night is filed under (default: today)
    rerun_all: bool = False  # also rerun settled acquisitions whose code / parameters changed
    snakemake_args: list[str] = field(default_factory=list)

    def validate(self) -> None:
        """Before any folder is made: options that would file a wrong night or never settle a file."""
        if not self.quiet_period >= 0:  # (also NaN)
            raise ConfigError(f"--quiet-period must be >= 0 seconds, got {self.quiet_period}")
        if self.night is not None:
            try:
                datetime.date.fromisoformat(self.night)
            except ValueError as err:
                raise ConfigError(f"--night must be a date YYYY-MM-DD, got {self.night!r}") from err
        if self.results_dir.exists() and not self.results_dir.is_dir():
            raise OutputError("exists as a file; the results of nightly runs are a folder", self.results_dir)


@dataclass
class NightResult:
    folder: Path
    rows: list[dict]  # this run's rows (its exit code)
    jobs: dict[str, int]
    shown: list[dict] = field(default_factory=list)  # the report's rows (an earlier run's for files it settled)

    @property
    def failed(self) -> int:
        return sum(r["status"] == "failed" for r in self.rows)


def merged_config(user: Path | None) -> dict:
    """The checkout's config/config.yaml with the user's config on top (what Snakemake will see)."""
    config = yaml.safe_load((repo_root() / "config" / "config.yaml").read_text()) or {}
    if user is not None:
        if not user.is_file():
            raise ConfigError("config file does not exist", user)
        try:
            own = yaml.safe_load(user.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"not valid YAML: {' '.join(str(err).split())}", user) from err
        if not isinstance(own, dict):
            raise ConfigError(f"a config must be a mapping of sections, got {type(own).__name__}", user)
        config = deep_update(config, own)
    return config


def checked_config(user: Path | None) -> dict:
    """``merged_config``, checked as the workflow will check it, before the night starts: a typo
    is one error line and exit code 2, not an acquisition failure every night."""
    from ..schema import check_config, schema_for

    config = merged_config(user)
    try:
        check_config(config, schema_for(config, repo_root() / "config" / "schema.yaml"))
    except ConfigError as err:
        raise ConfigError(str(err), user) if user is not None else err from None
    experiment = config.get("experiment", "default")
    if experiment != "default":
        from ..experiments import load_experiment

        try:
            exp = load_experiment(repo_root() / "config" / "experiments" / f"{experiment}.yaml")
        except ConfigError as err:
            raise ConfigError(f"experiment {experiment!r}: {err}", user) from None
        if exp.sheet or exp.samples:  # the night's sample sheet would be ignored or filtered away
            raise ConfigError(f"experiment {experiment!r} names its own samples ({exp.sheet or exp.samples}); "
                              "nightly processes the input folder's acquisitions: choose an experiment without "
                              "'sheet' or 'samples'", user)
    return config


def run_night(opts: NightOptions) -> NightResult:
    opts.validate()
    results = opts.results_dir.resolve()
    input_dir = opts.input_dir.resolve()
    if not input_dir.is_dir():
        raise ConfigError("input folder does not exist", input_dir)
    config = checked_config(opts.config)
    params = load_params(IngestParams, stage_params(config, "ingest"), where="ingest")
    gt_suffix = (config.get("samples") or {}).get("ground_truth_suffix", "_labels")
    profile = resolve_profile(opts.profile)  # a missing profile: before any folder is made
    with single_instance(results):
        night = opts.night or datetime.date.today().isoformat()
        run_id = datetime.datetime.now().isoformat(timespec="seconds")
        started = time.time()
        folder = results / "nights" / night
        folder.mkdir(parents=True, exist_ok=True)
        snake_log = folder / "snakemake.log"
        overlay = folder / "config.yaml"
        wf = Workflow(results / ".nightly", [*([opts.config.resolve()] if opts.config else []), overlay],
                      profile, list(opts.snakemake_args))
        wf.prepare()
        notes = []
        if stop_orphaned_group(wf.workdir):
            notes.append("stopped the Snakemake a killed run left running (its jobs resume from their partial outputs)")
        if stale_snakemake_locks(wf.workdir):  # we hold the guard: no other run can own it
            wf.run([TARGET, "--unlock"], snake_log)
            notes.append("cleared a stale Snakemake lock left by a killed run")
        history = History(results / "acquisitions.parquet")
        acquisitions = scan(input_dir, history, quiet_period=opts.quiet_period, params=params,
                            gt_suffix=gt_suffix, rerun_all=opts.rerun_all)
        samples = _samples(acquisitions, history)
        ignored = _ignored(input_dir)
        if ignored:
            notes.append(ignored)
        _write_inputs(folder, overlay, results, samples)
        jobs: dict[str, int] = {}
        outcomes: dict[str, SampleOutcome] = {}
        stopped: BaseException | None = None
        try:
            if samples:
                code, text = wf.run(_run_args(wf, acquisitions, samples, snake_log, opts.rerun_all), snake_log)
                jobs = job_counts(text)
                if code != 0:
                    notes.append(f"Snakemake exited with {code}: {last_error_line(text)}")
                summary = wf.summary(snake_log)
                outcomes = {name: outcome(summary, name, wf.workdir, results, started,
                                          scored=bool(samples[name][1].ground_truth)) for name in samples}
        except (KeyboardInterrupt, SystemExit) as err:  # a time limit's SIGTERM, Ctrl-C: record, then stop
            stopped = err
            how = "SIGTERM" if isinstance(err, SystemExit) and err.code == 143 else "an interrupt"
            notes.append(f"stopped by {how} after {time.time() - started:.0f} s: acquisitions not finished are "
                         "retried next night (finished outputs are kept)")
            outcomes = {name: SampleOutcome(sample=name, processed=False, retry=True,
                                            reason="the night was stopped before it finished") for name in samples}
        rows = _rows(acquisitions, samples, outcomes, night, run_id, folder)
        history.append(rows)
        notes.append(f"run {run_id}, {time.time() - started:.0f} s; cumulative table: {history.path}")
        experiment = config.get("experiment", "default")
        notes.append(f"outputs: {results}/ingest/<sample>/image.ome.zarr (staged) and "
                     f"{results}/{experiment}/<sample>/<cell>/labels.ome.zarr (segmentation)")
        shown, earlier = _night_rows(history.table, night, run_id, rows)
        if earlier:
            notes.append(f"{earlier} rows of files settled by an earlier run of this night are shown as that run left them")
        write_report(folder, night, shown, jobs, notes)
        (folder / "jobs.json").write_text(json.dumps(jobs, indent=1))
        if stopped is not None:
            raise stopped
    return NightResult(folder, rows, jobs, shown)


def _ignored(folder: Path) -> str:
    """A note on what the input folder holds that is never an acquisition: files of other formats
    (.nd2, .lif, ...) and subfolders, which are not searched; empty when there is none."""
    others, folders = [], []
    for path in sorted(folder.iterdir()):
        if path.is_dir():
            folders.append(path.name)
        elif not path.name.lower().endswith((*IMAGE_SUFFIXES, DONE_SUFFIX)) and not path.name.startswith("."):
            others.append(path.name)
    parts = []
    if others:
        parts.append(f"{len(others)} file(s) of formats nightly does not read ({', '.join(others[:5])}"
                     f"{', ...' if len(others) > 5 else ''}; it reads {', '.join(IMAGE_SUFFIXES)})")
    if folders:
        parts.append(f"{len(folders)} subfolder(s), which are not searched ({', '.join(folders[:5])}"
                     f"{', ...' if len(folders) > 5 else ''})")
    return "ignored in the input folder: " + "; ".join(parts) if parts else ""


def _samples(acquisitions: list[Acquisition], history: History) -> dict[str, tuple[Acquisition, object]]:
    """Sample name -> (acquisition, Sample) for tonight's work; name clashes fail the later file."""
    out: dict[str, tuple[Acquisition, object]] = {}
    for acq in acquisitions:
        if not acq.to_process:
            continue
        gt = str(acq.ground_truth) if acq.ground_truth else None
        found = acquisition_samples(acq.file, gt, scene_labels(acq.file, names=acq.scene_names))
        clash = next((s.name for s in found if s.name in out or history.owner(s.name) not in (None, str(acq.file))),
                     None)
        if clash:
            owner = out[clash][0].file if clash in out else history.owner(clash)
            acq.status, acq.reason = "failed", f"sample name {clash!r} is already used by {owner}; rename the file"
            continue
        out.update({s.name: (acq, s) for s in found})
    return out


def _write_inputs(folder: Path, overlay: Path, results: Path, samples: dict) -> None:
    """The night's sample sheet and the config overlay that points the workflow at it."""
    sheet = folder / "samples.tsv"
    table = pd.DataFrame([{"sample": name, "image": s.image, "ground_truth": s.ground_truth or "", "scene": s.scene}
                          for name, (_acq, s) in samples.items()], columns=["sample", "image", "ground_truth", "scene"])
    table.to_csv(sheet, sep="\t", index=False)
    overlay.write_text(yaml.safe_dump({"results_dir": str(results),
                                       "samples": {"sheet": str(sheet), "input_dir": None}}))


def _run_args(wf: Workflow, acquisitions: list[Acquisition], samples: dict, snake_log: Path,
              rerun_all: bool) -> list[str]:
    """Keep going past a failing acquisition; rerun only what the inputs' times ask for (unless
    rerun_all); changed acquisitions are staged again whatever their files' times say."""
    args = [TARGET, "--keep-going", "--rerun-incomplete"]
    if not rerun_all:
        args += ["--rerun-triggers", "mtime"]
    changed = {rule: {name for name, (acq, _s) in samples.items() if acq.status == "changed" and which(acq)}
               for rule, which in (("ingest", _image_changed), ("ingest_ground_truth", _truth_changed))}
    if any(changed.values()):
        summary = wf.summary(snake_log)
        staged = [p for p, rule in zip(summary["output_file"], summary["rule"], strict=True)
                  if set(Path(p).parts) & changed.get(rule, set())]
        if staged:
            args += ["--forcerun", *staged]
    return args


def _image_changed(acq: Acquisition) -> bool:
    return acq.settled is None or (acq.size, acq.mtime_ns) != (acq.settled.size, acq.settled.mtime_ns)


def _truth_changed(acq: Acquisition) -> bool:
    return acq.settled is None or (acq.gt_size, acq.gt_mtime_ns) != (acq.settled.gt_size, acq.settled.gt_mtime_ns)


def _night_rows(table: pd.DataFrame, night: str, run_id: str, rows: list[dict]) -> tuple[list[dict], int]:
    """The rows the night's report shows: this run's, but a file this run found unchanged since an
    earlier run of the same night shows that run's rows (its segments, metrics, thumbnail or
    failure), so a second run filed under one night does not hide the first run's work."""
    if table.empty or "run" not in table.columns:
        return rows, 0
    earlier = table[(table["night"] == night) & (table["run"] != run_id) & table["status"].isin(["processed", "failed"])]
    shown, n_earlier = [], 0
    for row in rows:
        prev = earlier[earlier["file"] == row["file"]] if row["status"] == "unchanged" else earlier.iloc[0:0]
        if prev.empty:
            shown.append(row)
            continue
        last = prev[prev["run"] == prev["run"].iloc[-1]]
        records = [{k: v for k, v in r.items() if v is not None and v is not pd.NA and not (isinstance(v, float)
                    and v != v)} for r in last.to_dict("records")]
        shown += records
        n_earlier += len(records)
    return shown, n_earlier


def _rows(acquisitions: list[Acquisition], samples: dict, outcomes: dict[str, SampleOutcome], night: str,
          run_id: str, folder: Path) -> list[dict]:
    rows = []
    for acq in acquisitions:
        base = {"night": night, "run": run_id, "file": str(acq.file),
                "ground_truth": str(acq.ground_truth or ""), "size": acq.size, "mtime_ns": acq.mtime_ns,
                "sha256": acq.sha256, "gt_size": acq.gt_size, "gt_mtime_ns": acq.gt_mtime_ns,
                "gt_sha256": acq.gt_sha256, "retry": False}
        names = [n for n, (a, _s) in samples.items() if a is acq]
        if not names:  # waiting, unchanged, failed at the scan
            settled = acq.settled if acq.status == "unchanged" else None
            failed = acq.status == "failed"
            rows.append({**base, "sample": sample_name(acq.file), "status": acq.status, "reason": acq.reason,
                         "settled_night": settled.night if settled else night if failed else "",
                         "settled_status": settled.status if settled else "failed" if failed else ""})
            continue
        for name in names:
            rows += _sample_rows(base, name, samples[name][1].scene, outcomes.get(name), night, folder)
    return rows


def _sample_rows(base: dict, name: str, scene: int, result: SampleOutcome | None, night: str,
                 folder: Path) -> list[dict]:
    if result is None:
        result = SampleOutcome(sample=name, processed=False, reason="not run", retry=True)
    status = "processed" if result.processed else "failed"
    if not result.processed and not (result.sha256 or base["sha256"]):
        # its ingest did not finish, so no output recorded the content: hash it here, so that a copy
        # with a new time but the same bytes is not run (and failed) again
        from ..ingest.writer import sha256_file

        with contextlib.suppress(OSError):
            base = {**base, "sha256": sha256_file(Path(base["file"]))}
            if base["ground_truth"]:
                base["gt_sha256"] = sha256_file(Path(base["ground_truth"]))
    common = {**base, "sample": name, "scene": scene, "status": status, "reason": result.reason,
              "retry": result.retry, "settled_night": night, "settled_status": status,
              "sha256": result.sha256 or base["sha256"], "gt_sha256": result.gt_sha256 or base["gt_sha256"],
              "seconds": round(sum(result.timings.values()), 2), "timings": json.dumps(result.timings)}
    if not result.cells:
        return [common]
    rows = []
    for cell in result.cells:
        row = {**common, **{k: v for k, v in cell.items() if k != "thumbnail_source"}}
        if cell.get("thumbnail_source"):
            target = folder / "thumbnails" / f"{name}_{cell['cell']}.png"
            target.parent.mkdir(exist_ok=True)
            shutil.copyfile(cell["thumbnail_source"], target)
            row["thumbnail"] = str(target.relative_to(folder))
        rows.append(row)
    return rows
