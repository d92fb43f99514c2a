"""The workflow's JSON schema, generated from the parameter dataclasses (one source of truth).

``config/schema.yaml`` is what Snakemake validates the config against before any job runs;
generating it from the same dataclasses the commands load means a key the commands accept is
never rejected by the workflow, and a typo in any stage section fails at start-up instead of
in a job hours later. ``python -m zarrseg.schema > config/schema.yaml`` rewrites it; a test
checks the committed file is current.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import io
import os
import re
import sys
import tokenize
import types
import typing
from pathlib import Path
from typing import Any

import yaml

# config section -> "module:Class" of the parameters its command loads (learning methods add
# their own sections from the registry: see ``sections``)
STAGES: dict[str, str] = {
    "ingest": "zarrseg.ingest.params:IngestParams",
    "crops": "zarrseg.crops.params:CropParams",
    "predict": "zarrseg.predict.params:PredictParams",
    "segment": "zarrseg.segment.params:SegmentParams",
    "evaluate": "zarrseg.evaluation.score:EvaluateParams",
    "table": "zarrseg.evaluation.tables:TableParams",
    "features": "zarrseg.ssl.features:FeatureParams",
    "cluster": "zarrseg.ssl.cluster:ClusterParams",
    "panels": "zarrseg.evaluation.panels:PanelParams",
}

# Keys a learning method's section may hold for the workflow's own use (rules/*.smk read and
# remove them before the command loads the section): the samples it learns from.
METHOD_WORKFLOW_KEYS: dict[str, dict] = {
    "samples": {"type": ["array", "null"], "items": {"type": "string"},
                "description": "samples whose images (+ ground truth, for methods that need it) train the model: "
                               "names or shell patterns (e.g. `train_*`), may lie outside the experiment's samples "
                               "(default: `train.samples`, else the experiment's samples); `{sample}` stands for "
                               "the scored sample: one model per sample, trained on it alone (`[\"{sample}\"]`)"},
    "val_samples": {"type": ["array", "null"], "items": {"type": "string"},
                    "description": "samples used for validation"},
    "roi": {"type": ["string", "null"], "description": "region of the training samples, e.g. '0:20'"},
    "resources": {"type": ["object", "null"],
                  "properties": {"mem_mb": {"type": "integer", "minimum": 1}, "runtime": {"type": "integer", "minimum": 1},
                                 "gpu": {"type": "integer", "minimum": 0}},
                  "additionalProperties": False,
                  "description": "what a training job of this method requests (the train rule's defaults: mem_mb 16000, "
                                 "runtime 720 minutes, gpu 1; gpu 0 when loop.device is cpu), e.g. "
                                 "`{runtime: 120, gpu: 0}`"},
}


def sections() -> dict[str, type]:
    """Every config section with a parameter class: the stages, then each learning method's section."""
    from .learn.registry import all_methods

    out = {stage: params_class(stage) for stage in STAGES}
    for spec in all_methods():
        out.setdefault(spec.config_section, spec.params)
    return out


# Keys of the crops section for the workflow's own use: which samples go to which split.
CROPS_WORKFLOW_KEYS: dict[str, dict] = {
    "split": {"type": ["object", "null"], "additionalProperties": {"type": "array", "items": {"type": "string"}},
              "description": "split name (pretrain, finetune, test) -> sample names or shell patterns; every "
                             "sample in one split, so no acquisition has crops on both sides"},
}


def workflow_keys(section: str) -> dict[str, dict]:
    from .learn.registry import method_for_section

    if section == "crops":
        return CROPS_WORKFLOW_KEYS
    spec = method_for_section(section)
    return METHOD_WORKFLOW_KEYS if spec is not None and spec.data != "crops" else {}


# Defaults of these types are copied into the schema (documentation only: validation does not
# write them into the config; the dataclasses stay the one place defaults live).
_JSON_DEFAULT_OK = (int, float, str, bool, type(None))


def params_class(stage: str) -> type:
    if stage not in STAGES:
        from .learn.registry import method_for_section

        spec = method_for_section(stage)
        if spec is None:
            raise KeyError(stage)
        return spec.params
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
    """The trailing ``# comment`` of each field in the class source (and its base classes' sources,
    for inherited fields): the documentation of a key."""
    out: dict[str, str] = {}
    for base in reversed([b for b in cls.__mro__ if dataclasses.is_dataclass(b)]):
        out.update(_own_field_comments(base))
    return out


def _own_field_comments(cls: type) -> dict[str, str]:
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
    from .params import renamed_keys

    for old, targets in renamed_keys(cls).items():
        props[old] = {**_target_schema(cls, targets[0]), "deprecated": True,
                      "description": f"deprecated (removed in the next release): use `{'`, `'.join(targets)}`"}
    out = {"type": "object", "additionalProperties": False, "properties": props}
    if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):
        out["description"] = " ".join(cls.__doc__.split())
    return out


def _target_schema(cls: type, dotted: str) -> dict:
    """The type schema of the field a deprecated key moved to (``loop.steps`` -> int)."""
    tp: Any = cls
    for part in dotted.split("."):
        tp = typing.get_type_hints(tp)[part]
    schema = type_schema(tp)
    return {k: v for k, v in schema.items() if k not in ("default", "description")}


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
        "models": {"type": ["object", "null"], "additionalProperties": {"type": "string"},
                   "description": "checkpoint files that replace training a method's model: {method: file}; "
                                  "every `model:<method>` reference then means that file"},
        "methods": {"type": ["array", "null"], "items": {"type": "string"},
                    "description": "Python modules of third-party learning methods to register (each defines "
                                   "METHOD); installed packages can use the entry point group `zarrseg.methods`"},
    }
    for stage, cls in sections().items():
        section = dataclass_schema(cls)
        section["properties"].update(workflow_keys(stage))
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


def schema_for(config: dict, committed: str | Path) -> str:
    """The schema file a config is validated against: the committed one, or (when the config
    names third-party learning methods) one generated with their sections, in a temporary file."""
    modules = config.get("methods") or []
    if not modules:
        return str(Path(committed).resolve())
    import tempfile

    from .learn.registry import load_modules

    load_modules(modules)
    fd, path = tempfile.mkstemp(prefix="zarrseg-schema-", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        f.write(dump())
    return path


def check_config(config: Any, schema_path: str | Path) -> None:
    """Raise one ConfigError line for the first problem of a workflow config, before any job runs.

    Each stage and method section is checked against its own schema (generated from the same
    dataclasses the commands load), so the error names the key: an unknown one with the nearest
    known key, a wrong type, a value outside its choices. jsonschema's own report of the whole
    config is, for a section (``anyOf: [section, null]``), the section's entire schema: hundreds of
    lines that never name the typo. Checks across fields (a ``validate()``) run when each stage's
    command loads its section. The schema file alone is read here: importing every method's
    parameters (torch with them) would add seconds to every Snakemake start.
    """
    import jsonschema

    from .errors import ConfigError

    if not isinstance(config, dict):
        raise ConfigError(f"the config must be a mapping of sections, got {type(config).__name__}")
    schema = _schema_file(str(schema_path))
    validator = jsonschema.Draft202012Validator
    for key, value in config.items():
        section = next((b for b in schema["properties"].get(key, {}).get("anyOf", []) if b.get("type") == "object"),
                       None)
        if section is None or value is None:
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"config section {key!r} must be a mapping of parameters, got {value!r}")
        error = jsonschema.exceptions.best_match(validator(section).iter_errors(value))
        if error is not None:
            raise ConfigError(_schema_message(error, key))
    error = jsonschema.exceptions.best_match(validator(schema).iter_errors(config))
    if error is not None:
        raise ConfigError(_schema_message(error))


@functools.lru_cache(maxsize=4)
def _schema_file(path: str) -> dict:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader reads it 8x faster
    with open(path) as f:
        return yaml.load(f, Loader=loader)


def _schema_message(error: Any, section: str | None = None) -> str:
    """One line for a jsonschema error: where (dotted key path) and what."""
    from .params import unknown_key_message

    path = [*([section] if section else []), *map(str, error.absolute_path)]
    where = ".".join(path) or "the config"
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = list(error.schema.get("properties") or {})
        unknown = sorted(str(k) for k in error.instance if k not in known)
        if unknown:  # the commands' own wording, with the nearest known key
            return unknown_key_message(unknown[0], known, where, "parameter" if section else "key")
    return f"{where}: {' '.join(str(error.message).split())[:300]}"


def check_config_or_exit(config: Any, schema_path: str | Path) -> None:
    """``check_config`` for the Snakefile: the error as one line on stderr and exit code 2, before
    Snakemake prints a traceback of its own."""
    from .errors import ConfigError

    try:
        check_config(config, schema_path)
    except ConfigError as err:
        print(f"zarrseg workflow: config error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def dump() -> str:
    return yaml.safe_dump(build_schema(), sort_keys=False, allow_unicode=True, width=100)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def parameter_rows(cls: type, prefix: str = "", instance: Any = None) -> list[tuple[str, str, str]]:
    """(dotted key, default as YAML, meaning from the source comment) of every parameter of ``cls``,
    nested sections flattened: the README tables and each command's ``--help`` list these."""
    comments = field_comments(cls)
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = getattr(instance, f.name) if instance is not None else _default(f)
        if dataclasses.is_dataclass(hints[f.name]) or dataclasses.is_dataclass(default):
            rows += parameter_rows(type(default) if dataclasses.is_dataclass(default) else hints[f.name],
                                   f"{prefix}{f.name}.", default if dataclasses.is_dataclass(default) else None)
            continue
        shown = "(required)" if default is dataclasses.MISSING else yaml.safe_dump(
            default, default_flow_style=True, width=1000).strip().removesuffix("...").strip()
        rows.append((f"{prefix}{f.name}", shown, comments.get(f.name, "")))
    return rows


def _rows(cls: type) -> list[str]:
    return [f"| `{key}` | `{shown}` | {text.replace('|', chr(92) + '|')} |" for key, shown, text in parameter_rows(cls)]


def markdown_reference() -> str:
    """Per-stage parameter tables for the README (key, default, meaning from the source comments)."""
    lines: list[str] = []
    for stage, cls in sections().items():
        extra = [f"| `{k}` | `null` | workflow only: {v['description']} |" for k, v in workflow_keys(stage).items()]
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
    root = Path(repo)
    (root / "config" / "schema.yaml").write_text(dump())
    readme = root / "README.md"
    readme.write_text(readme_with_reference(readme.read_text()))


if __name__ == "__main__":
    if "--write" in sys.argv:
        write()
    else:
        sys.stdout.write(markdown_reference() + "\n" if "--markdown" in sys.argv else dump())
