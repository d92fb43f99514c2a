"""Stand-in SLURM commands that run jobs on this machine, for testing the SLURM profile.

Why: the workflow's SLURM profile (snakemake-executor-plugin-slurm) and the multi-node Dask
option (dask-jobqueue's SLURMCluster) must be proven by real runs, and CI has no cluster. These
stand-ins speak exactly the parts of the SLURM command line that the plugin (2.8), its job-step
plugin and dask-jobqueue call, and fail loudly on anything else:

- ``sbatch``: parses the command-line options and the script's ``#SBATCH`` lines, records argv,
  options and script, starts the script under its ``#!`` interpreter in the background (own
  session, so it outlives sbatch) and prints the job id (``--parsable``) or
  ``Submitted batch job N``.
- ``sacct`` / ``squeue``: ``<id>|<STATE>`` lines (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED)
  for jobs with the queried ``--name``; the account guess and failure-reason queries.
- ``sacctmgr``: the user's account. ``scontrol show config``: MinJobAge / MaxArraySize.
- ``sinfo -o %P``: partitions. ``scancel``: kills an unfinished job's process group.
- ``srun``: records its options, then executes its command (options stripped).

State lives under ``$ZARRSEG_FAKE_SLURM_DIR/jobs/<id>/``: ``submit.json`` (argv, parsed options,
script), ``script.sh``, ``pid``, ``exitcode`` (written when the script ends), ``srun.jsonl``.
Only the standard library is used, so any python3 runs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

ACCOUNT = "zarrseg_test"
PARTITIONS = ("cpu*", "gpu")  # '*' marks the default partition, as real sinfo does
FIRST_JOB_ID = 1000

# sbatch options that take a separate value ("--mem 4000", "-p cpu"); every other option the
# plugin emits uses "--opt=value" or is a flag. Anything unknown is an error, as in real sbatch,
# so a changed plugin fails loudly here instead of silently passing.
SBATCH_VALUE_OPTIONS = {
    "-A": "account",
    "--account": "account",
    "-p": "partition",
    "--partition": "partition",
    "-t": "time",
    "--time": "time",
    "-C": "constraint",
    "--constraint": "constraint",
    "-D": "chdir",
    "--chdir": "chdir",
    "-o": "output",
    "--output": "output",
    "-e": "error",
    "--error": "error",
    "-J": "job-name",
    "--job-name": "job-name",
    "--comment": "comment",
    "--mem": "mem",
    "--mem-per-cpu": "mem-per-cpu",
    "--clusters": "clusters",
    "-M": "clusters",
    "-n": "ntasks",
    "--ntasks": "ntasks",
    "-c": "cpus-per-task",
    "--cpus-per-task": "cpus-per-task",
    "--cpus-per-gpu": "cpus-per-gpu",
    "-G": "gpus",
    "--gpus": "gpus",
    "--gres": "gres",
    "-N": "nodes",
    "--nodes": "nodes",
    "--qos": "qos",
    "-q": "qos",
    "--reservation": "reservation",
    "-x": "exclude",
    "--exclude": "exclude",
    "--wrap": "wrap",
    "--export": "export",
    "--ntasks-per-gpu": "ntasks-per-gpu",
    "--ntasks-per-node": "ntasks-per-node",
    "-a": "array",
    "--array": "array",
    "-d": "dependency",
    "--dependency": "dependency",
}
SBATCH_FLAGS = {
    "--parsable": "parsable",
    "--requeue": "requeue",
    "--no-requeue": "no-requeue",
    "--exclusive": "exclusive",
    "-H": "hold",
    "--hold": "hold",
}


class UsageError(Exception):
    pass


def state_dir() -> Path:
    value = os.environ.get("ZARRSEG_FAKE_SLURM_DIR")
    if not value:
        raise UsageError("ZARRSEG_FAKE_SLURM_DIR is not set (directory for the stand-in SLURM state)")
    path = Path(value) / "jobs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def parse_sbatch(argv: list[str]) -> tuple[dict[str, str | bool], list[str]]:
    """sbatch options (long names) and the positional part (script and its arguments)."""
    options: dict[str, str | bool] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-") or arg == "-":
            return options, argv[i:]
        name, eq, value = arg.partition("=")
        if name in SBATCH_FLAGS and not eq:
            options[SBATCH_FLAGS[name]] = True
        elif name in SBATCH_VALUE_OPTIONS:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise UsageError(f"option {name} requires a value")
                value = argv[i]
            options[SBATCH_VALUE_OPTIONS[name]] = value
        elif len(arg) > 2 and arg[:2] in SBATCH_VALUE_OPTIONS and not arg.startswith("--"):
            options[SBATCH_VALUE_OPTIONS[arg[:2]]] = arg[2:]  # "-n1" style
        else:
            raise UsageError(f"unrecognized option '{arg}'")
        i += 1
    return options, []


def new_job_dir(jobs: Path) -> tuple[str, Path]:
    """Allocate the next job id; mkdir is atomic, so concurrent sbatch calls never share one."""
    existing = [int(p.name) for p in jobs.iterdir() if p.name.isdigit()]
    job_id = max(existing, default=FIRST_JOB_ID - 1) + 1
    while True:
        try:
            (jobs / str(job_id)).mkdir()
            return str(job_id), jobs / str(job_id)
        except FileExistsError:
            job_id += 1


def script_options(script: str) -> dict[str, str | bool]:
    """Options from the script's leading ``#SBATCH`` lines (parsing stops at the first command)."""
    options: dict[str, str | bool] = {}
    for line in script.splitlines()[1:]:
        line = line.strip()
        if line.startswith("#SBATCH"):
            options.update(parse_sbatch(shlex.split(line[len("#SBATCH") :]))[0])
        elif line and not line.startswith("#"):
            break
    return options


def _log_path(template: str, job_id: str, options: dict, workdir: Path) -> Path:
    name = (
        template.replace("%J", job_id).replace("%j", job_id).replace("%x", str(options.get("job-name", "")))
    )
    return Path(name) if Path(name).is_absolute() else workdir / name


def sbatch(argv: list[str]) -> int:
    options, positional = parse_sbatch(argv)
    if "wrap" in options:
        if positional:
            raise UsageError("script arguments not permitted with --wrap option")
        script = f"#!/bin/sh\n{options['wrap']}\n"
    elif positional:
        source = positional[0]
        script = sys.stdin.read() if source in ("-", "/dev/stdin") else Path(source).read_text()
    else:
        script = sys.stdin.read()
    if not script.startswith("#!"):
        raise UsageError(
            "This does not look like a batch script.  The first line must start with #! followed by the path to an interpreter."
        )
    options = {**script_options(script), **options}  # the command line wins, as in sbatch
    if "array" in options:
        raise UsageError("the stand-in sbatch does not run job arrays")

    job_id, job_dir = new_job_dir(state_dir())
    workdir = Path(str(options.get("chdir", os.getcwd())))
    output_path = _log_path(str(options.get("output", "slurm-%j.out")), job_id, options, workdir)
    error_path = _log_path(str(options["error"]), job_id, options, workdir) if "error" in options else None
    script_path = job_dir / "script.sh"
    script_path.write_text(script)
    script_path.chmod(0o755)
    record = {"job_id": job_id, "argv": argv, "options": options, "script": script, "cwd": os.getcwd()}
    (job_dir / "submit.json").write_text(json.dumps(record, indent=1))

    env = dict(os.environ)
    if options.get("export", "ALL") == "NONE":
        env = {k: v for k, v in env.items() if k in ("PATH", "HOME", "ZARRSEG_FAKE_SLURM_DIR")}
    env.update(
        SLURM_JOB_ID=job_id,
        SLURM_JOBID=job_id,
        SLURM_JOB_NAME=str(options.get("job-name", "")),
        SLURM_SUBMIT_DIR=os.getcwd(),
        SLURM_CLUSTER_NAME="fake",
        SLURM_JOB_PARTITION=str(options.get("partition", "cpu")),
    )
    for option, variable in (
        ("cpus-per-task", "SLURM_CPUS_PER_TASK"),
        ("gpus", "SLURM_GPUS"),
        ("cpus-per-gpu", "SLURM_CPUS_PER_GPU"),
        ("mem", "SLURM_MEM_PER_NODE"),
    ):
        if option in options:
            env[variable] = str(options[option])
    # The script runs under its #! interpreter; the shell around it writes the job's exit status
    # (atomically) for sacct.
    runner = '"$1"; status=$?; echo $status > "$2.tmp"; mv "$2.tmp" "$2"'
    with contextlib.ExitStack() as files:
        stdout = files.enter_context(open(output_path, "ab"))
        stderr = files.enter_context(open(error_path, "ab")) if error_path else subprocess.STDOUT
        process = subprocess.Popen(
            ["/bin/sh", "-c", runner, "fake-slurm-job", str(script_path), str(job_dir / "exitcode")],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    (job_dir / "pid").write_text(str(process.pid))
    print(job_id if options.get("parsable") else f"Submitted batch job {job_id}")
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # an unreaped zombie still answers kill(0)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def job_state(job_dir: Path) -> str:
    exitcode = job_dir / "exitcode"
    if exitcode.exists():
        code = exitcode.read_text().strip()
        return "CANCELLED" if code == "CANCELLED" else "COMPLETED" if code == "0" else "FAILED"
    pid_file = job_dir / "pid"
    if not pid_file.exists():
        return "PENDING"
    if _alive(int(pid_file.read_text())):
        return "RUNNING"
    return job_state(job_dir) if exitcode.exists() else "FAILED"  # killed without an exit status


def _jobs_named(name: str | None) -> list[tuple[str, Path]]:
    jobs = state_dir()
    found = []
    for job_dir in sorted(jobs.iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else -1):
        submit = job_dir / "submit.json"
        if not submit.exists():
            continue
        options = json.loads(submit.read_text())["options"]
        if name is None or options.get("job-name") == name:
            found.append((job_dir.name, job_dir))
    return found


def _option(argv: list[str], *names: str) -> str | None:
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def sacct(argv: list[str]) -> int:
    fmt = (_option(argv, "--format", "-o") or "").lower()
    if fmt.startswith("account"):  # the plugin's account guess: sacct -nu USER -o Account%256
        print(ACCOUNT)
        return 0
    job = _option(argv, "-j", "--jobs")
    if fmt.startswith("reason"):  # failure reason of one job step: sacct -j ID.STEP --format=Reason
        job_id, _, step = (job or "").partition(".")
        job_dir = state_dir() / job_id
        if step == "0" and job_dir.exists() and job_state(job_dir) == "FAILED":
            print(
                f"NonZeroExitCode({(job_dir / 'exitcode').read_text().strip() if (job_dir / 'exitcode').exists() else '?'})"
            )
        return 0
    if fmt.startswith("nodelist"):
        print("localhost")
        return 0
    for job_id, job_dir in _jobs_named(_option(argv, "--name")):
        if job is None or job.split(".")[0] == job_id:
            print(f"{job_id}|{job_state(job_dir)}")
    return 0


def squeue(argv: list[str]) -> int:
    for job_id, job_dir in _jobs_named(_option(argv, "--name", "-n")):
        print(f"{job_id}|{job_state(job_dir)}")
    return 0


def scancel(argv: list[str]) -> int:
    """Stop unfinished jobs: their process group (each job runs in its own session)."""
    for job_id in (a for a in argv if not a.startswith("-")):
        job_dir = state_dir() / job_id.split("_")[0]
        pid_file = job_dir / "pid"
        if not pid_file.exists() or job_state(job_dir) not in ("PENDING", "RUNNING"):
            continue  # finished jobs are left alone (their pid may belong to someone else now)
        (job_dir / "exitcode").write_text("CANCELLED\n")
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    return 0


def srun(argv: list[str]) -> int:
    """Record the step's options, then run its command in place (as one task on this node)."""
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 1  # the job-step plugin passes every srun option in "--opt=value" / "-n1" form
    options, command = argv[:i], argv[i:]
    if not command:
        raise UsageError("srun: no command given")
    job_id = os.environ.get("SLURM_JOB_ID")
    if job_id:
        with open(state_dir() / job_id / "srun.jsonl", "a") as log:
            log.write(json.dumps({"options": options, "command": command}) + "\n")
    os.execvp(command[0], command)
    return 127  # not reached


def sacctmgr(argv: list[str]) -> int:
    print(ACCOUNT)  # sacctmgr -n -s list user NAME format=account%256
    return 0


def scontrol(argv: list[str]) -> int:
    if argv[:2] != ["show", "config"]:
        raise UsageError(f"scontrol: unsupported command {shlex.join(argv)}")
    print(
        "Configuration data as of stand-in\nMaxArraySize            = 1001\nMinJobAge               = 300 sec"
    )
    return 0


def sinfo(argv: list[str]) -> int:
    print("PARTITION")
    print("\n".join(PARTITIONS))
    return 0


COMMANDS = {f.__name__: f for f in (sbatch, sacct, squeue, scancel, srun, sacctmgr, scontrol, sinfo)}


def main(name: str, argv: list[str]) -> int:
    try:
        return COMMANDS[name](argv)
    except UsageError as error:
        print(f"{name}: error: {error}", file=sys.stderr)
        return 1
