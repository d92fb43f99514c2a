"""The method registry: name -> parameters, hooks, model builder, output and post-processing.

The schema, the CLI (``zarrseg train --method NAME``) and the workflow rules read this
registry; none of them names a method. Methods come from three places:

* the built-in methods of ``zarrseg.methods`` (imported only when asked for);
* Python entry points in the group ``zarrseg.methods`` (``name = "package.module:METHOD"``);
* modules named in the workflow config (``methods: [package.module]``) or in the environment
  variable ``ZARRSEG_METHODS`` (comma-separated), which define ``METHOD`` or call ``register``.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import ConfigError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "zarrseg.methods"
ENV_VAR = "ZARRSEG_METHODS"

# One line per built-in method: its name, where its MethodSpec lives, and its config section (the
# spec's ``config_section``). Which method owns a section is asked while Snakemake builds the DAG;
# the section here answers it without importing every method (and torch). tests/test_learn.py
# checks the sections against the specs.
BUILTIN: dict[str, tuple[str, str]] = {
    "unet": ("zarrseg.methods.unet:METHOD", "train"),
    "dino": ("zarrseg.methods.dino:METHOD", "pretrain"),
    "finetune": ("zarrseg.methods.finetune:METHOD", "finetune"),
    "contrastive_global": ("zarrseg.methods.contrastive:GLOBAL", "contrastive_global"),
    "contrastive_local": ("zarrseg.methods.contrastive:LOCAL", "contrastive_local"),
    "wnet": ("zarrseg.methods.wnet:METHOD", "wnet"),
    "spoco": ("zarrseg.methods.spoco:METHOD", "spoco"),
}


@dataclass(frozen=True)
class MethodSpec:
    """Everything the rest of zarrseg needs to know about a learning method."""

    name: str
    params: type  # parameter dataclass; embeds ``loop: LoopParams``
    # a ``learn.loop.Method`` subclass, or "module:Name" where it lives: imported only when a model
    # is trained (the workflow asks specs while Snakemake plans, and every SLURM job plans again)
    hooks: type | str
    # the inference module from a checkpoint's model_config (or "module:function", imported when used)
    build_model: Callable[[dict], Any] | str
    section: str = ""  # config section of its parameters (default: the name)
    # what the workflow gives it to learn from: images with ground truth (train/val lists of
    # {image, labels}), images alone (``images``) or the experiment's crop store (``crops``)
    data: Literal["labelled", "images", "crops"] = "labelled"
    # dense tiled prediction, ViT features, or none (a pretraining stage whose model gives one vector
    # per image: its checkpoint initialises another method, e.g. contrastive_global -> contrastive_local)
    inference: Literal["predict", "features", "none"] = "predict"
    # how outputs become labels: segment (boundaries), cluster (features), threshold (a probability),
    # argmax (soft class scores: the channel with the highest score)
    postprocess: Literal["segment", "cluster", "threshold", "argmax"] = "segment"
    summary: str = ""  # one line for --help and the README
    # tiny parameters for smoke checks (benchmarks/gpu_check.py) from paths of synthetic data:
    # {"image2d", "labels2d", "image3d", "labels3d", "rgb", "vit"} -> the method's parameter dict
    example: Callable[[dict[str, str]], dict] | None = None

    @property
    def config_section(self) -> str:
        return self.section or self.name

    def hooks_class(self) -> type:
        """The training hooks (imports the method's torch code when given as "module:Name")."""
        return _import_target(self.hooks)

    def model_builder(self) -> Callable[[dict], Any]:
        return _import_target(self.build_model)


def _import_target(target: Any) -> Any:
    if not isinstance(target, str):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


_REGISTRY: dict[str, MethodSpec] = {}
_LOADED_ENV: set[str] = set()
_ENTRY_POINTS_LOADED = False


def register(spec: MethodSpec, replace: bool = False) -> MethodSpec:
    """Add a method; registering another method under a taken name is an error."""
    if not isinstance(spec, MethodSpec):
        raise ConfigError(f"register() takes a MethodSpec, got {type(spec).__name__}")
    old = _REGISTRY.get(spec.name)
    if old is not None and old is not spec and not replace:
        raise ConfigError(f"learning method {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def _resolve(target: str) -> MethodSpec:
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    spec = getattr(module, attr or "METHOD")
    return register(spec)


def load_modules(names: Iterable[str]) -> list[MethodSpec]:
    """Import method modules named in a config / the environment; each defines ``METHOD`` or registers."""
    specs = []
    for name in names:
        name = name.strip()
        if not name:
            continue
        before = set(_REGISTRY)
        try:
            module = importlib.import_module(name.partition(":")[0])
        except ImportError as err:
            raise ConfigError(f"learning-method module {name!r} cannot be imported ({err})") from err
        spec = getattr(module, name.partition(":")[2] or "METHOD", None)
        if isinstance(spec, MethodSpec):
            specs.append(register(spec))
        specs += [_REGISTRY[n] for n in set(_REGISTRY) - before if _REGISTRY[n] not in specs]
        if not specs:
            raise ConfigError(f"learning-method module {name!r} defines no METHOD and registers nothing")
    return specs


def _load_plugins() -> None:
    global _ENTRY_POINTS_LOADED
    env = os.environ.get(ENV_VAR, "")
    for name in [n for n in env.replace(";", ",").split(",") if n.strip() and n not in _LOADED_ENV]:
        _LOADED_ENV.add(name)
        load_modules([name])
    if not _ENTRY_POINTS_LOADED:
        _ENTRY_POINTS_LOADED = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                spec = ep.load()
                register(spec if isinstance(spec, MethodSpec) else spec.METHOD)
            except Exception as err:  # a broken third-party package must not break zarrseg
                log.warning("learning method entry point %s could not be loaded: %s", ep.name, err)


def method_names() -> list[str]:
    """Every known method: built-ins first, then plugins in registration order."""
    _load_plugins()
    return list(dict.fromkeys([*BUILTIN, *_REGISTRY]))


def get_method(name: str, where: str | None = None) -> MethodSpec:
    """The method called ``name`` (built-in, entry point or configured module)."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in BUILTIN:
        return _resolve(BUILTIN[name][0])
    _load_plugins()
    if name in _REGISTRY:
        return _REGISTRY[name]
    prefix = f"{where}: " if where else ""
    raise ConfigError(
        f"{prefix}unknown learning method {name!r}; known: {', '.join(method_names())} "
        f"(third-party methods: entry point group {ENTRY_POINT_GROUP!r} or config key 'methods')"
    )


def all_methods() -> list[MethodSpec]:
    return [get_method(n) for n in method_names()]


def method_for_section(section: str) -> MethodSpec | None:
    """The method whose parameters live in config section ``section`` (the first in ``method_names``
    order), or None; a built-in method is imported only when it is the one."""
    for name in method_names():
        if name not in _REGISTRY and name in BUILTIN and BUILTIN[name][1] != section:
            continue  # a built-in not imported yet, with another section
        spec = get_method(name)
        if spec.config_section == section:
            return spec
    return None
