"""The ``zarrseg`` command: one subcommand per pipeline stage.

Each subcommand lives in ``zarrseg.commands.<name>`` and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their
subcommand runs, so ``zarrseg --help`` stays fast (no torch import).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .errors import ZarrsegError

# name -> (module, one-line help). Order is the pipeline order shown by --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "ingest": ("zarrseg.commands.ingest", "stage CZI / TIFF / OME-TIFF / HDF5 / PNG / JPEG into chunked, compressed OME-Zarr"),
    "crops": ("zarrseg.commands.crops", "sliding-window crops of staged images into a Zarr crop store, split by acquisition"),
    "train": ("zarrseg.commands.train", "train a learning method (U-Net by default; --list-methods)"),
    "predict": ("zarrseg.commands.predict", "dense prediction (intensity or any trained model) over OME-Zarr"),
    "export": ("zarrseg.commands.export", "export a U-Net checkpoint as TorchScript + BioImage.IO rdf.yaml"),
    "segment": ("zarrseg.commands.segment", "blockwise DT-watershed -> RAG -> multicut/GASP/MWS segmentation"),
    "evaluate": ("zarrseg.commands.evaluate", "score a segmentation against ground truth (one tidy table)"),
    "describe": ("zarrseg.commands.describe", "segment counts and sizes without ground truth, thumbnail, summary"),
    "table": ("zarrseg.commands.table", "aggregate metric tables of an experiment grid into summaries and plots"),
    "features": ("zarrseg.commands.features", "DINO ViT patch features of an image into a Zarr feature volume"),
    "pretrain": ("zarrseg.commands.pretrain", "DINO self-distillation pretraining of a ViT on OME-Zarr tiles"),
    "finetune": ("zarrseg.commands.finetune", "fine-tune a DINO ViT with a reconstruction head (L1)"),
    "cluster": ("zarrseg.commands.cluster", "cluster feature volumes or pixel embeddings into labels"),
    "panels": ("zarrseg.commands.panels", "side-by-side figure: original | label images | ground truth"),
    "nightly": ("zarrseg.commands.nightly", "process the new, complete acquisitions of a folder unattended"),
    "grids": ("zarrseg.commands.grids", "list the experiment grids, or show one grid's samples, fixed values and cells"),
}

EPILOG = """\
Every stage reads and writes OME-Zarr/Zarr on disk; outputs are written to '<out>.partial'
and renamed when complete, so an interrupted run never leaves an output that looks finished.
Stage parameters come from '--params' (a YAML/JSON file or JSON string, e.g. one section of
config/config.yaml) and '--set key=value' overrides; unknown keys are rejected.
Run 'zarrseg <command> --help' for the parameters of a stage.
"""


def setup_logging(verbose: int, log_file: str | None) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose == 1 or log_file else logging.WARNING
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=min(level, logging.INFO), handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers[0].setLevel(level)
    for noisy in ("distributed", "numba", "matplotlib", "PIL", "fsspec", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zarrseg", description="zarrseg: raw microscopy -> OME-Zarr -> segmentations -> metrics tables.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"zarrseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _command_parser(name: str) -> tuple[argparse.ArgumentParser, object]:
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    # @FILE: the arguments in FILE, one per line (the workflow passes thousands of table paths so:
    # one command line is limited to 128 KiB)
    parser = argparse.ArgumentParser(prog=f"zarrseg {name}", description=getattr(module, "__doc__", None) or help_text,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, fromfile_prefix_chars="@")
    common = parser.add_argument_group("common options")
    common.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    common.add_argument("--log", metavar="FILE", help="also write the log to FILE")
    common.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    module.add_arguments(parser)
    return parser, module


def quiet_abandoned_reads() -> None:
    """After a failed read (a damaged chunk), zarr's event loop still holds the other chunks' read
    tasks; asyncio logs each as "Task was destroyed but it is pending!" at exit. The error line
    has been printed: keep it the only one."""
    logging.getLogger("asyncio").disabled = True


PASSTHROUGH = ("--snakemake-args",)  # options whose value is another program's arguments


def _glue_passthrough(argv: list[str]) -> list[str]:
    """``--snakemake-args "-n"``: argparse takes a value that starts with '-' for an option and
    stops; written as ``--snakemake-args=-n`` it is a value."""
    out: list[str] = []
    it = iter(argv)
    for token in it:
        if token in PASSTHROUGH:
            value = next(it, None)
            out.append(token if value is None else f"{token}={value}")
        else:
            out.append(token)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help") or argv[0] == "--version":
        parser.parse_args(argv or ["--help"])
        return 0
    name = argv[0]
    if name not in COMMANDS:
        parser.error(f"unknown command {name!r}; choose from {', '.join(COMMANDS)}")
    try:
        cmd_parser, module = _command_parser(name)
    except ModuleNotFoundError as err:
        if err.name == COMMANDS[name][0]:
            print(f"zarrseg {name}: error: this command is not available in this build", file=sys.stderr)
            return 2
        raise
    args = cmd_parser.parse_args(_glue_passthrough(argv[1:]))
    setup_logging(args.verbose, args.log)
    from .ome import ignore_snakemake_markers

    ignore_snakemake_markers()
    try:
        return int(module.run(args) or 0)
    except ZarrsegError as err:
        if args.debug:
            raise
        logging.getLogger("zarrseg").debug("error", exc_info=True)
        quiet_abandoned_reads()
        print(f"zarrseg {name}: error: {err}", file=sys.stderr)
        return err.exit_code
    except PermissionError as err:  # e.g. an output folder made read-only while the command ran
        if args.debug:
            raise
        logging.getLogger("zarrseg").debug("error", exc_info=True)
        print(f"zarrseg {name}: error: {err.filename or ''}: permission denied", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"zarrseg {name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a reader that stopped early (`| head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 0
    except Exception as err:  # unexpected: still one line for the user, traceback in the log / --debug
        if args.debug:
            raise
        logging.getLogger("zarrseg").error("unexpected error", exc_info=True)
        print(f"zarrseg {name}: error: {type(err).__name__}: {' '.join(str(err).split())}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
