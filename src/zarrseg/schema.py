"""The workflow's JSON schema, generated from the parameter dataclasses (one source of truth).

``config/schema.yaml`` is what Snakemake validates the config against before any job runs;
generating it from the same dataclasses the commands load means a key the commands accept is
never rejected by the workflow, and a typo in any stage section fails at start-up instead of
in a job hours later. ``python -m zarrseg.schema > config/schema.yaml`` rewrites it; a test
checks the committed file is current.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import io
import re
import sys
import tokenize
import types
import typing
from typing import Any

import yaml

# config section -> "module:Class" of the parameters its command loads
STAGES: dict[str, str] = {
    "ingest": "zarrseg.ingest.params:IngestParams",
    "train": "zarrseg.unet.train_params:TrainParams",
    "predict": "zarrseg.unet.params:PredictParams",
    "segment": "zarrseg.segment.params:SegmentParams",
    "evaluate": "zarrseg.evaluation.score:EvaluateParams",
    "table": "zarrseg.evaluation.tables:TableParams",
    "features": "zarrseg.ssl.features:FeatureParams",
    "pretrain": "zarrseg.ssl.dino:PretrainParams",
    "finetune": "zarrseg.ssl.finetune:FinetuneParams",
    "cluster": "zarrseg.ssl.cluster:ClusterParams",
    "panels": "zarrseg.evaluation.panels:PanelParams",
}

# Keys a config section may hold for the workflow's own use (rules/*.smk read and remove them
# before the command loads the section): train may name samples instead of image/label paths.
WORKFLOW_KEYS: dict[str, dict[str, dict]] = {
    "train": {
        "samples": {"type": ["array", "null"], "items": {"type": "string"},
                    "description": "samples whose image + ground truth train the model: names or shell patterns "
                                   "(e.g. `train_*`), may lie outside the experiment's samples "
                                   "(default: the experiment's samples with ground truth)"},
        "val_samples": {"type": ["array", "null"], "items": {"type": "string"},
                        "description": "samples used for validation"},
        "roi": {"type": ["string", "null"], "description": "region of the training samples, e.g. '0:20'"},
    },
}

# Defaults of these types are copied into the schema (documentation only: validation does not
# write them into the config; the dataclasses stay the one place defaults live).
_JSON_DEFAULT_OK = (int, float, str, bool, type(None))


def params_class(stage: str) -> type:
    module, name = STAGES[stage].split(":")
    return getattr(importlib.import_module(module), name)


def type_schema(tp: Any) -> dict:
    """JSON schema of one type annotation (the subset our parameter dataclasses use)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return dataclass_schema(tp)
    if origin in (typing.Union, types.UnionType):
        options = [type_schema(a) for a in args]
        return {"anyOf": options}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (list, tuple):
        item = args[0] if args else Any
        schema: dict = {"type": "array"}
        if origin is tuple and args and args[-1] is not Ellipsis:
            schema["prefixItems"] = [type_schema(a) for a in args]
            schema["minItems"] = schema["maxItems"] = len(args)
        elif item is not Any:
            schema["items"] = type_schema(item)
        return schema
    if origin is dict or tp is dict:
        return {"type": "object"}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}
    if tp in simple:
        return {"type": simple[tp]}
    return {}


def field_comments(cls: type) -> dict[str, str]:
    """The trailing ``# comment`` of each field in the class source: the documentation of a key."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    pending: list[str] = []  # comment lines directly above a field
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            line = tok.line
            match = re.match(r"\s*(\w+)\s*:", line)
            if match and line.strip() and not line.strip().startswith("#"):
                out[match.group(1)] = tok.string.lstrip("# ").strip()
            elif line.strip().startswith("#"):
                pending.append(tok.string.lstrip("# ").strip())
        elif tok.type == tokenize.NAME and pending and re.match(rf"\s*{tok.string}\s*:", tok.line):
            out.setdefault(tok.string, " ".join(pending))
            pending = []
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            if tok.type != tokenize.NAME:
                pending = []
    return out


def dataclass_schema(cls: type) -> dict:
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    props: dict[str, dict] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        schema = type_schema(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        if isinstance(default, _JSON_DEFAULT_OK):
            schema["default"] = default
        if f.name in comments:
            schema["description"] = comments[f.name]
        props[f.name] = schema
    out = {"type": "object", "additionalProperties": False, "properties": props}
    if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):
        out["description"] = " ".join(cls.__doc__.split())
    return out


def build_schema() -> dict:
    from .ome import Compression
    from .parallel import DaskParams

    storage = {"type": "object", "additionalProperties": False, "properties": {
        "chunks": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 2, "maxItems": 3},
        "compression": dataclass_schema(Compression)}}
    storage["properties"]["compression"]["properties"]["codec"] = {"enum": ["zstd", "lz4", "lz4hc", "zlib", "blosclz"]}
    storage["properties"]["compression"]["properties"]["level"] = {"type": "integer", "minimum": 0, "maximum": 9}
    dask = dataclass_schema(DaskParams)
    dask["properties"]["n_workers"]["minimum"] = 0
    dask["properties"]["slurm_jobs"]["minimum"] = 1
    props: dict[str, Any] = {
        "samples": {"type": "object", "additionalProperties": False, "properties": {
            "sheet": {"type": ["string", "null"], "description": "TSV sample sheet"},
            "input_dir": {"type": ["string", "null"], "description": "folder of CZI/TIFF inputs"},
            "ground_truth_suffix": {"type": "string", "default": "_labels"}}},
        "results_dir": {"type": "string", "default": "results"},
        "experiment": {"type": "string", "default": "default"},
        "storage": storage,
        "dask": dask,
    }
    for stage in STAGES:
        section = dataclass_schema(params_class(stage))
        section["properties"].update(WORKFLOW_KEYS.get(stage, {}))
        props[stage] = {"anyOf": [section, {"type": "null"}]}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "description": "zarrseg workflow configuration (config/config.yaml). Generated from the parameter "
                       "dataclasses by `python -m zarrseg.schema`; do not edit by hand.",
        "type": "object",
        "additionalProperties": False,
        "required": ["samples", "results_dir", "storage", "dask"],
        "properties": props,
    }


def dump() -> str:
    return yaml.safe_dump(build_schema(), sort_keys=False, allow_unicode=True, width=100)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _rows(cls: type, prefix: str = "", instance: Any = None) -> list[str]:
    comments = field_comments(cls)
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = getattr(instance, f.name) if instance is not None else _default(f)
        text = comments.get(f.name, "").replace("|", "\\|")
        if dataclasses.is_dataclass(hints[f.name]) or dataclasses.is_dataclass(default):
            rows += _rows(type(default) if dataclasses.is_dataclass(default) else hints[f.name],
                          f"{prefix}{f.name}.", default if dataclasses.is_dataclass(default) else None)
            continue
        shown = "(required)" if default is dataclasses.MISSING else yaml.safe_dump(
            default, default_flow_style=True, width=1000).strip().removesuffix("...").strip()
        rows.append(f"| `{prefix}{f.name}` | `{shown}` | {text} |")
    return rows


def markdown_reference() -> str:
    """Per-stage parameter tables for the README (key, default, meaning from the source comments)."""
    lines: list[str] = []
    for stage in STAGES:
        cls = params_class(stage)
        extra = [f"| `{k}` | `null` | workflow only: {v['description']} |" for k, v in WORKFLOW_KEYS.get(stage, {}).items()]
        lines += [f"#### `{stage}`", "", "| key | default | meaning |", "|---|---|---|", *_rows(cls), *extra, ""]
    return "\n".join(lines)


BEGIN, END = "<!-- BEGIN STAGE PARAMETERS (python -m zarrseg.schema --write) -->", "<!-- END STAGE PARAMETERS -->"


def readme_with_reference(readme: str) -> str:
    """README text with the generated stage-parameter tables between the two markers."""
    head, _, rest = readme.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{markdown_reference()}\n{END}{tail}"


def write(repo: str = ".") -> None:
    """Regenerate config/schema.yaml and the README's parameter reference in place."""
    from pathlib import Path

    root = Path(repo)
    (root / "config" / "schema.yaml").write_text(dump())
    readme = root / "README.md"
    readme.write_text(readme_with_reference(readme.read_text()))


if __name__ == "__main__":
    if "--write" in sys.argv:
        write()
    else:
        sys.stdout.write(markdown_reference() + "\n" if "--markdown" in sys.argv else dump())
