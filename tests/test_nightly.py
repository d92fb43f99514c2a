"""The parts of `zarrseg nightly` without Snakemake: scan, history, guard, outcome, report."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from conftest import shared_path

from zarrseg.cli import main
from zarrseg.ingest import IngestParams
from zarrseg.ingest.writer import sha256_file
from zarrseg.nightly.guard import AlreadyRunning, single_instance, stale_snakemake_locks
from zarrseg.nightly.history import History
from zarrseg.nightly.outcome import outcome
from zarrseg.nightly.report import write_report
from zarrseg.nightly.scan import scan
from zarrseg.nightly.snake import job_counts, last_error_line

HOUR = 3600.0


def _age(path: Path, seconds: float) -> None:
    """Pretend ``path`` was last written ``seconds`` ago."""
    t = time.time() - seconds
    os.utime(path, (t, t))


def _tif(path: Path, seed: int, age: float = HOUR) -> Path:
    tifffile.imwrite(path, np.random.default_rng(seed).integers(0, 255, (8, 16, 16), dtype=np.uint8),
                     photometric="minisblack")
    _age(path, age)
    return path


def _scan(folder: Path, history: History, **kw):
    return {a.file.name: a for a in scan(folder, history, quiet_period=60, params=IngestParams(), **kw)}


def _settle(history: History, found: dict, night: str) -> None:
    """Record tonight's scan as if every acquisition to process was processed."""
    rows = []
    for acq in found.values():
        status = "processed" if acq.to_process else acq.status
        rows.append({"night": night, "run": night, "file": str(acq.file), "status": status,
                     "reason": acq.reason, "retry": False, "settled_night": night, "settled_status": status,
                     "size": acq.size, "mtime_ns": acq.mtime_ns, "gt_size": acq.gt_size,
                     "gt_mtime_ns": acq.gt_mtime_ns, "sha256": acq.sha256 or sha256_file(acq.file),
                     "gt_sha256": acq.gt_sha256 or (sha256_file(acq.ground_truth) if acq.ground_truth else ""),
                     "sample": acq.file.stem})
    history.append(rows)


def test_scan_complete_waiting_failed(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    _tif(folder / "old.tif", 0)
    _tif(folder / "young.tif", 1, age=5)  # still within the quiet period
    _tif(folder / "marked.tif", 2, age=5)
    (folder / "marked.tif.done").touch()  # the acquisition software says it is complete
    data = shared_path("czi", "DAPI_GFP.czi").read_bytes()
    (folder / "cut.czi").write_bytes(data[: len(data) // 2])
    _age(folder / "cut.czi", HOUR)
    _tif(folder / "pair.tif", 3)
    _tif(folder / "pair_labels.tif", 4, age=5)  # a young ground truth keeps its image waiting
    import imageio.v3 as iio

    iio.imwrite(folder / "cut.png", np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    (folder / "cut.png").write_bytes((folder / "cut.png").read_bytes()[:200])  # decoded at the scan, too
    _age(folder / "cut.png", HOUR)
    found = _scan(folder, History(tmp_path / "acquisitions.parquet"))
    assert {n: a.status for n, a in found.items()} == {
        "old.tif": "new", "young.tif": "waiting", "marked.tif": "new", "cut.czi": "failed", "pair.tif": "waiting",
        "cut.png": "failed"}
    assert "truncated or corrupt" in found["cut.png"].reason
    assert "quiet period 60 s" in found["young.tif"].reason
    reason = found["cut.czi"].reason
    assert "cut.czi" in reason and "truncated" in reason and "\n" not in reason
    assert found["cut.czi"].sha256  # hashed, so that only a changed file is retried
    assert len(found["old.tif"].scene_names) == 1  # opened: the structural check passed


def test_scan_new_changed_unchanged(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    a, b = _tif(folder / "a.tif", 0), _tif(folder / "b.tif", 1)
    _tif(folder / "c.tif", 2)
    _tif(folder / "c_labels.tif", 3)
    history = History(tmp_path / "acquisitions.parquet")
    _settle(history, _scan(folder, history), "n1")
    history = History(tmp_path / "acquisitions.parquet")  # read back from the file
    assert {n: x.status for n, x in _scan(folder, history).items()} == {n: "unchanged" for n in ("a.tif", "b.tif",
                                                                                                  "c.tif")}
    _tif(a, 10)  # re-exported: other content, same size
    t = time.time() - HOUR / 2
    os.utime(b, (t, t))  # touched: same content, new time
    _tif(folder / "c_labels.tif", 11)  # the ground truth was corrected
    found = _scan(folder, history)
    assert {n: x.status for n, x in found.items()} == {"a.tif": "changed", "b.tif": "unchanged", "c.tif": "changed"}
    assert found["b.tif"].reason == ""  # unchanged and fine
    assert {n: x.status for n, x in _scan(folder, history, rerun_all=True).items()} == {
        "a.tif": "changed", "b.tif": "rerun", "c.tif": "changed"}


def test_failed_files_are_retried_only_when_changed(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    bad = folder / "bad.tif"
    bad.write_bytes(b"II*\x00" + b"\x00" * 100)
    _age(bad, HOUR)
    history = History(tmp_path / "acquisitions.parquet")
    found = _scan(folder, history)
    assert found["bad.tif"].status == "failed"
    _settle(history, found, "n1")
    again = _scan(folder, history)["bad.tif"]
    assert again.status == "unchanged" and again.reason == found["bad.tif"].reason
    bad.write_bytes(b"II*\x00" + b"\x01" * 120)  # changed: looked at again
    _age(bad, HOUR)
    assert _scan(folder, history)["bad.tif"].status == "failed"
    # a failure that was not the file's fault (run killed, workflow did not start) is retried as new
    history.append([{"night": "n2", "run": "n2", "file": str(bad.resolve()), "status": "failed", "retry": True,
                     "size": bad.stat().st_size, "mtime_ns": bad.stat().st_mtime_ns, "sample": "bad"}])
    history.table = history.table[history.table["night"] == "n2"]
    assert _scan(folder, history)["bad.tif"].status == "failed"  # still the structural check, not "unchanged"


def test_guard_is_exclusive_and_finds_stale_locks(tmp_path, capsys):
    with single_instance(tmp_path):
        with pytest.raises(AlreadyRunning, match=f"pid {os.getpid()}") as err:
            with single_instance(tmp_path):
                pass
        assert err.value.exit_code == 75
        capsys.readouterr()
        code = main(["nightly", str(tmp_path), "-o", str(tmp_path)])
        assert code == 75 and "another nightly run is active" in capsys.readouterr().err
    with single_instance(tmp_path):  # released when the holder ends
        pass
    assert stale_snakemake_locks(tmp_path) == []
    locks = tmp_path / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.input.lock").write_text("x")
    assert [p.name for p in stale_snakemake_locks(tmp_path)] == ["0.input.lock"]


def test_job_counts_from_snakemake_output():
    text = ("Building DAG of jobs...\nJob stats:\njob         count\n---------  -------\ningest            3\n"
            "segment           3\nsamples           1\ntotal             7\n\nSelect jobs to execute...\n"
            "Job stats:\njob count\n--- ---\nother 9\ntotal 9\n")
    assert job_counts(text) == {"ingest": 3, "segment": 3, "samples": 1}
    assert job_counts("Nothing to be done (all requested files are present and up to date).") == {}
    # a header line's message is on the next line
    said = last_error_line("Select jobs...\nWorkflowError:\n  Failed to open source file x.tif\nShutting down")
    assert said == "WorkflowError: Failed to open source file x.tif"


def test_outcome_reads_snakemakes_summary_and_the_failing_log(tmp_path):
    logs = tmp_path / "results" / "logs" / "default"
    for stage, text in (("ingest", "INFO ok\n"), ("segment", "x\nzarrseg segment: error: a.ome.zarr: NaN\n"),
                        ("describe", "")):
        (logs / stage / "s1").mkdir(parents=True)
        (logs / stage / "s1" / "base.log").write_text(text)
    (tmp_path / "results" / "ingest" / "s2").mkdir(parents=True)
    summary = pd.DataFrame([
        ["results/ingest/s1/image.ome.zarr", "ingest", "results/logs/default/ingest/s1/base.log", "ok", "no update"],
        ["results/default/s1/base/labels.ome.zarr", "segment", "results/logs/default/segment/s1/base.log",
         "missing", "update pending"],
        ["results/default/s1/base/segments.parquet", "describe", "results/logs/default/describe/s1/base.log",
         "missing", "update pending"],
        ["results/ingest/s2/image.ome.zarr", "ingest", "results/logs/default/ingest/s2/image.log", "missing",
         "update pending"],
        ["results/ingest/s10/image.ome.zarr", "ingest", "", "ok", "no update"],
    ], columns=["output_file", "rule", "log-file(s)", "status", "plan"])
    results = tmp_path / "results"
    one = outcome(summary, "s1", tmp_path, results, since=0)
    assert not one.processed and one.reason == "zarrseg segment: error: a.ome.zarr: NaN" and not one.retry
    two = outcome(summary, "s2", tmp_path, results, since=0)  # no error written anywhere: killed, retried next night
    assert not two.processed and two.retry and "ingest pending" in two.reason
    assert outcome(summary, "s10", tmp_path, results, since=0).processed  # "s1" is not a folder of s10's paths
    assert outcome(summary, "default", tmp_path, results, since=0).reason.startswith("the workflow did not plan")
    late = outcome(summary, "s1", tmp_path, results, since=time.time() + 60)  # logs older than tonight do not count
    assert late.retry


def test_report_lists_every_status(tmp_path):
    rows = [
        {"file": "/in/a.czi", "scene": 1, "sample": "a_P1", "status": "processed", "reason": "", "shape": "3x64x64",
         "voxel_size_um": "1x1.6x1.6", "n_segments": 12, "size_median": 250.0, "size_unit": "µm³",
         "arand": 0.12, "voi_split": 0.3, "voi_merge": 0.4, "seconds": 9.5, "thumbnail": "thumbnails/a_P1_base.png"},
        {"file": "/in/b.czi", "sample": "b", "status": "failed", "reason": "b.czi: truncated CZI"},
        {"file": "/in/c.tif", "sample": "c", "status": "waiting", "reason": "modified 3 s ago"},
        {"file": "/in/d.tif", "sample": "d", "status": "unchanged", "reason": "", "settled_status": "processed",
         "settled_night": "2025-01-01"},
    ]
    md = write_report(tmp_path, "2025-01-02", rows, {"ingest": 1}, ["a note"]).read_text()
    assert "1 processed, 1 failed, 1 waiting, 1 unchanged" in md and "ingest 1" in md
    assert "| a.czi | 1 | a_P1 | processed |  | 3x64x64 | 1x1.6x1.6 | 12 | 250 µm³ | 0.12 | 0.3 / 0.4 |" in md
    assert "![a_P1](thumbnails/a_P1_base.png)" in md and "processed on 2025-01-01" in md
    page = (tmp_path / "report.html").read_text()
    assert '<img src="thumbnails/a_P1_base.png"' in page and "b.czi: truncated CZI" in page


def test_nightly_help_and_bad_input(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["nightly", "--help"])
    text = capsys.readouterr().out
    for needle in ("--quiet-period", "--profile", ".done", "waiting", "acquisitions.parquet", "scrontab"):
        assert needle in text, needle
    assert main(["nightly", str(tmp_path / "missing"), "-o", str(tmp_path / "out")]) == 2
    assert "input folder does not exist" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "out", ignore_errors=True)
    # any section of the config is checked before the night starts: one line, exit 2, nothing written
    (tmp_path / "in").mkdir()
    config = tmp_path / "night.yaml"
    for text, said in (("segment: {partitionr: gasp}", "did you mean 'partitioner'"),
                       ("- a list", "must be a mapping"), ("a: [", "not valid YAML"),
                       ("samples: {ground_truth_suffix: 5}", "ground_truth_suffix")):
        config.write_text(text)
        assert main(["nightly", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--config", str(config)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and said in err[0] and "night.yaml" in err[0], err
        assert not (tmp_path / "out").exists()
    # options that would file a wrong night, a results path that is a file, a missing profile
    (tmp_path / "afile").write_text("")
    for argv, said in ((["--quiet-period", "-5"], "--quiet-period must be >= 0"),
                       (["--night", "2024-13-45"], "--night must be a date YYYY-MM-DD"),
                       (["--profile", str(tmp_path / "nowhere")], "nowhere"),
                       (["-o", str(tmp_path / "afile")], "exists as a file")):
        assert main(["nightly", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *argv]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and said in err[0], err
        assert not (tmp_path / "out").exists() and (tmp_path / "afile").read_text() == ""


def test_a_snakemake_left_running_by_a_killed_night_is_stopped(tmp_path):
    """kill -9 of the nightly alone leaves its Snakemake's process group running; the next night
    stops it before unlocking, so two Snakemakes never write the same outputs."""
    import subprocess
    import sys

    from zarrseg.nightly.guard import GROUP_FILE, stop_orphaned_group

    def started(proc):  # Popen returns before the kernel has set the new program's arguments
        deadline = time.monotonic() + 30
        while not Path(f"/proc/{proc.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)
        return proc

    assert not stop_orphaned_group(tmp_path)  # nothing recorded
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)", "snakemake", "--directory"]
    # another results folder's Snakemake under the recorded pid (reused) is left alone
    elsewhere = started(subprocess.Popen([*sleeper, str(tmp_path / "other")], start_new_session=True))
    (tmp_path / GROUP_FILE).write_text(f"{elsewhere.pid}\n")
    try:
        assert not stop_orphaned_group(tmp_path) and elsewhere.poll() is None
    finally:
        elsewhere.kill()
    orphan = started(subprocess.Popen([*sleeper, str(tmp_path)], start_new_session=True))
    (tmp_path / GROUP_FILE).write_text(f"{orphan.pid}\n")
    try:
        assert stop_orphaned_group(tmp_path, grace=5.0)
        assert orphan.wait(timeout=10) != 0
    finally:
        orphan.kill()
    assert not (tmp_path / GROUP_FILE).exists()
    # a recorded group that is not Snakemake's (its pid reused by another program) is left alone
    other = started(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True))
    (tmp_path / GROUP_FILE).write_text(f"{other.pid}\n")
    try:
        assert not stop_orphaned_group(tmp_path) and other.poll() is None
    finally:
        other.kill()


def test_schedule_examples_match_the_readme_and_parse():
    """The cron / scrontab / systemd entries in profiles/nightly/ are the README's, and their command parses."""
    import argparse
    import shlex

    from zarrseg.commands import nightly

    repo = Path(__file__).resolve().parents[1]
    readme = (repo / "README.md").read_text()
    keys = ("zarrseg nightly", "#SCRON", "OnCalendar=", "Persistent=", "SuccessExitStatus=", "WorkingDirectory=")
    commands = []
    for name in ("crontab", "scrontab", "zarrseg-nightly.service", "zarrseg-nightly.timer"):
        lines = [line for line in (repo / "profiles" / "nightly" / name).read_text().splitlines()
                 if any(k in line for k in keys) and not line.startswith(("# ", "Description="))]
        assert lines, name
        for line in lines:
            assert line in readme, (name, line)
            if "zarrseg nightly" in line:
                commands.append(line)
    assert len(commands) == 3
    parser = argparse.ArgumentParser()
    nightly.add_arguments(parser)
    for line in commands:
        words = shlex.split(line.split("zarrseg nightly", 1)[1].split(">>")[0])
        args = parser.parse_args(words)
        assert args.results_dir == Path("/data/results/nightly") and args.profile in ("local", "slurm")
        if ">>" in line:  # the shell opens the log before zarrseg runs: the line makes its folder first
            log_folder = str(Path(line.split(">>")[1].split()[0]).parent)
            assert line.split(" && ")[0].endswith(f"mkdir -p {log_folder}")


def test_a_second_run_of_a_night_keeps_the_first_runs_rows_in_the_report():
    from zarrseg.nightly.night import _night_rows

    first = [{"night": "n", "run": "r1", "file": "/in/a.tif", "sample": "a", "cell": c, "status": "processed",
              "n_segments": 5, "thumbnail": f"thumbnails/a_{c}.png"} for c in ("base", "beta-0.6")]
    failed = {"night": "n", "run": "r1", "file": "/in/b.tif", "sample": "b", "status": "failed", "reason": "truncated"}
    second = [{"night": "n", "run": "r2", "file": f, "sample": s, "status": "unchanged"}
              for f, s in (("/in/a.tif", "a"), ("/in/b.tif", "b"))]
    new = {"night": "n", "run": "r2", "file": "/in/c.tif", "sample": "c", "status": "processed"}
    table = pd.DataFrame([*first, failed, *second, new])
    shown, earlier = _night_rows(table, "n", "r2", [*second, new])
    assert earlier == 3
    assert [(r["sample"], r["status"], r.get("cell")) for r in shown] == [
        ("a", "processed", "base"), ("a", "processed", "beta-0.6"), ("b", "failed", None), ("c", "processed", None)]
    assert shown[2]["reason"] == "truncated" and shown[0]["thumbnail"] == "thumbnails/a_base.png"
    # another night's rows never come in
    assert _night_rows(table, "m", "r2", second) == (second, 0)


def test_snakemake_args_may_start_with_a_dash():
    """``--snakemake-args "-n"`` is a value, not an unknown option (argparse alone refuses it)."""
    from zarrseg.cli import _command_parser, _glue_passthrough

    parser, _ = _command_parser("nightly")
    args = parser.parse_args(_glue_passthrough(["in", "-o", "out", "--snakemake-args", "-n --cores 1"]))
    assert args.snakemake_args == "-n --cores 1" and args.results_dir == Path("out")
    with pytest.raises(SystemExit):  # what the glue fixes
        parser.parse_args(["in", "-o", "out", "--snakemake-args", "-n"])


def test_snakemake_output_reaches_the_log_while_it_runs(tmp_path, monkeypatch):
    import sys
    import threading

    from zarrseg.nightly.snake import Workflow

    wf = Workflow(tmp_path, [], tmp_path)
    script = "import time; print('planned 3 jobs', flush=True); time.sleep(1.5); print('done')"
    monkeypatch.setattr(Workflow, "command", lambda self, *args: [sys.executable, "-c", script])
    log = tmp_path / "night" / "snakemake.log"
    result = {}
    runner = threading.Thread(target=lambda: result.update(out=wf.run(["samples"], log)))
    runner.start()
    deadline = time.monotonic() + 20
    while "planned 3 jobs" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "planned 3 jobs" in log.read_text() and runner.is_alive()  # readable before Snakemake ends
    runner.join(timeout=20)
    code, out = result["out"]
    assert code == 0 and out.splitlines() == ["planned 3 jobs", "done"] and "$ snakemake samples" in log.read_text()


def test_a_job_that_dies_silently_is_named_and_settled_after_three_nights(tmp_path):
    from zarrseg.nightly.history import MAX_SILENT_DEATHS, History
    from zarrseg.nightly.outcome import DIED, outcome

    logs = tmp_path / "results" / "logs"
    logs.mkdir(parents=True)
    (logs / "segment_a.log").write_text("segment: 12 blocks\n")  # started tonight, then the OOM killer
    summary = pd.DataFrame([{"output_file": "results/default/a/base/labels.ome.zarr", "rule": "segment",
                             "log-file(s)": "results/logs/segment_a.log", "status": "missing", "plan": "update"}])
    result = outcome(summary, "a", tmp_path, tmp_path / "results", since=time.time() - 60)
    assert result.reason.startswith(DIED) and "segment" in result.reason and result.retry
    history = History(tmp_path / "acquisitions.parquet")
    row = {"file": "/in/a.tif", "sample": "a", "status": "failed", "reason": result.reason, "retry": True,
           "size": 10, "mtime_ns": 5, "sha256": ""}
    for night in range(MAX_SILENT_DEATHS):
        assert history.settled("/in/a.tif") is None  # retried: it may have been a fluke
        history.append([{**row, "night": f"2026-01-0{night + 1}", "run": f"r{night}"}])
    settled = History(tmp_path / "acquisitions.parquet").settled("/in/a.tif")
    assert settled.status == "failed" and "not retried after 3 nights until the file changes" in settled.reason
    history.append([{**row, "night": "2026-01-09", "run": "r9", "size": 11}])  # new bytes: tried again
    assert history.settled("/in/a.tif") is None


def test_a_damaged_history_is_one_clear_error_and_a_workflow_failure_records_the_hash(tmp_path):
    from zarrseg.errors import InputError
    from zarrseg.ingest.writer import sha256_file
    from zarrseg.nightly.history import History
    from zarrseg.nightly.night import _sample_rows
    from zarrseg.nightly.outcome import SampleOutcome

    damaged = tmp_path / "acquisitions.parquet"
    damaged.write_bytes(b"PAR1 cut short")
    with pytest.raises(InputError, match="nightly history is damaged.*move it away"):
        History(damaged)
    image = tmp_path / "a.tif"
    _tif(image, 0)
    base = {"file": str(image), "ground_truth": "", "sha256": "", "gt_sha256": ""}
    failed = SampleOutcome(sample="a", processed=False, reason="ingest: cannot decode")
    (row,) = _sample_rows(base, "a", 0, failed, "n", tmp_path)
    assert row["sha256"] == sha256_file(image)  # a copy with the same bytes is not retried


def test_ignored_inputs_and_a_future_time_are_said_and_old_timings_do_not_count(tmp_path):
    from zarrseg.nightly.night import _ignored
    from zarrseg.nightly.outcome import _timings

    folder = tmp_path / "in"
    (folder / "2026-11-30").mkdir(parents=True)
    for name in ("scan.lif", "notes.nd2", "a.tif", "a.tif.done", ".DS_Store"):
        (folder / name).write_bytes(b"x")
    note = _ignored(folder)
    assert "2 file(s) of formats nightly does not read (notes.nd2, scan.lif" in note
    assert "1 subfolder(s), which are not searched (2026-11-30)" in note
    assert _ignored(tmp_path / "in" / "2026-11-30") == ""
    _tif(folder / "future.tif", 0, age=-3 * HOUR)  # the microscope PC's clock runs ahead
    reason = _scan(folder, History(tmp_path / "h.parquet"))["future.tif"].reason
    assert "10800 s in the future" in reason
    bench = tmp_path / "results" / "benchmarks" / "segment"
    bench.mkdir(parents=True)
    for name, age in (("old", 2 * HOUR), ("new", 0)):
        (bench / f"{name}.tsv").write_text("s\th:m:s\tmax_rss\n4.0\t0:00:04\t10\n")
        _age(bench / f"{name}.tsv", age)
    rows = pd.DataFrame([{"rule": r, "log-file(s)": f"results/logs/segment/{n}.log"}
                         for r, n in (("segment", "new"), ("predict", "old"))])
    assert _timings(rows, tmp_path, since=time.time() - HOUR) == {"segment": 4.0}  # not an earlier night's


def test_a_night_stopped_by_sigterm_leaves_its_report_and_rows(tmp_path, monkeypatch):
    from zarrseg.nightly import NightOptions, run_night
    from zarrseg.nightly.snake import Workflow

    inbox = tmp_path / "in"
    inbox.mkdir()
    _tif(inbox / "a.tif", 0)

    def killed(self, args, log):  # the time limit arrives while Snakemake runs
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("planned 5 jobs\n")
        raise SystemExit(143)

    monkeypatch.setattr(Workflow, "run", killed)
    results = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        run_night(NightOptions(input_dir=inbox, results_dir=results, night="2026-01-01", quiet_period=0))
    assert stop.value.code == 143
    report = (results / "nights" / "2026-01-01" / "report.md").read_text()
    assert "stopped by SIGTERM" in report and "retried next night" in report
    rows = History(results / "acquisitions.parquet").table
    assert list(rows["status"]) == ["failed"] and rows["retry"].all()  # not settled: tried again next night


def test_the_command_line_summary_counts_the_rows_the_report_shows(tmp_path, monkeypatch, capsys):
    import argparse

    import zarrseg.nightly
    from zarrseg.commands import nightly as command
    from zarrseg.nightly.night import NightResult

    again = {"status": "unchanged"}  # a second run of the night: the first run processed the file
    monkeypatch.setattr(zarrseg.nightly, "run_night",
                        lambda opts: NightResult(tmp_path, [again], {}, [{"status": "processed"}]))
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    code = command.run(parser.parse_args([str(tmp_path), "-o", str(tmp_path / "out")]))
    assert code == 0 and "1 processed, 0 failed, 0 waiting, 0 unchanged" in capsys.readouterr().out
