"""The one place that wraps timm: build a DINO ViT, load weights, run it on tiles.

Weights come from exactly one of three sources, chosen explicitly (never a silent download
that hangs on an offline cluster node):

* ``weights="hub"``: timm's ``vit_small_patch8_224.dino`` hub weights, only when the user
  asks for them (needs network access);
* ``checkpoint=PATH``: a local file, either a zarrseg checkpoint (``save_checkpoint``) or a
  plain state dict (timm or original-DINO key layout, e.g. ``dino_deitsmall8_pretrain.pth``);
* neither: a loud warning and random initialisation (useful for tests and as the
  "untrained" reference against which a pretraining run is judged).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ..errors import ConfigError, InputError
from .vit_spec import ViTSpec  # noqa: F401 (defined without torch: read while the workflow plans)

log = logging.getLogger(__name__)

HUB_NAME = "vit_small_patch8_224.dino"
CHECKPOINT_KIND = "zarrseg-vit"


class RandomInitWarning(UserWarning):
    """The ViT has no trained weights: features are those of a random network."""


def build_vit(spec: ViTSpec, *, hub: bool = False) -> nn.Module:
    """A timm ``VisionTransformer`` without classifier head, with dynamic input size."""
    import timm

    spec.validate()
    kwargs: dict[str, Any] = dict(num_classes=0, img_size=spec.img_size, dynamic_img_size=True)
    if hub:
        if not spec.is_vit_s8:
            raise ConfigError(
                "hub weights exist only for the ViT-S/8 architecture (patch 8, 384-d, 12 blocks, 6 heads)"
            )
        return timm.create_model(HUB_NAME, pretrained=True, **kwargs)
    return timm.create_model(
        HUB_NAME,
        pretrained=False,
        patch_size=spec.patch_size,
        embed_dim=spec.embed_dim,
        depth=spec.depth,
        num_heads=spec.num_heads,
        **kwargs,
    )


def _read_checkpoint(path: Path) -> dict:
    """A zarrseg checkpoint (any format, converted to the current one) or a plain state dict."""
    from ..learn import checkpoint as ckpt

    if not path.is_file():
        raise InputError("checkpoint does not exist", path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated/corrupt files raise many different types
        raise InputError(f"cannot be read as a torch checkpoint ({type(err).__name__}: {err})", path) from err
    if not isinstance(obj, dict):
        raise InputError(f"checkpoint must hold a dict, got {type(obj).__name__}", path)
    if obj.get("format") == ckpt.FORMAT or obj.get("kind") == CHECKPOINT_KIND:
        obj = ckpt.read(path)
        if obj["io"].get("kind") != "features":
            raise InputError(f"not a ViT checkpoint (a {obj['method']} model of {obj['io']['kind']})", path)
    return obj


def _is_zarrseg(obj: dict) -> bool:
    return obj.get("format") == "zarrseg-model"


def spec_of_checkpoint(path: str | Path) -> ViTSpec | None:
    """The architecture stored in a zarrseg checkpoint (None for plain state dicts)."""
    obj = _read_checkpoint(Path(path))
    return ViTSpec(**obj["model_config"]) if _is_zarrseg(obj) else None


def build_from_config(config: dict) -> nn.Module:
    """The registry's model builder: a ViT from a checkpoint's model config (its ``ViTSpec``)."""
    from ..params import from_dict

    return build_vit(from_dict(ViTSpec, config, where="checkpoint.model_config"))


def _plain_state_dict(obj: dict) -> dict[str, torch.Tensor]:
    for key in ("teacher", "model", "state_dict"):  # original DINO training checkpoints nest the weights
        if key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    out = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            continue
        for prefix in ("module.", "backbone."):
            if k.startswith(prefix):
                k = k[len(prefix) :]
        out[k] = v
    return out


def load_vit(
    spec: ViTSpec | None = None,
    *,
    checkpoint: str | Path | None = None,
    weights: Literal["none", "hub"] = "none",
) -> tuple[nn.Module, ViTSpec, str]:
    """Build the ViT and load its weights; returns (model in eval mode, spec, description of weights).

    A zarrseg checkpoint carries its own architecture, which wins over ``spec``.
    """
    spec = spec or ViTSpec()
    if checkpoint is not None:
        path = Path(checkpoint)
        obj = _read_checkpoint(path)
        if _is_zarrseg(obj):
            spec = ViTSpec(**obj["model_config"])
            model = build_vit(spec)
            state = obj["state_dict"]
        else:
            from timm.models.vision_transformer import checkpoint_filter_fn

            model = build_vit(spec)
            state = checkpoint_filter_fn(_plain_state_dict(obj), model)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("head")]
        if missing:
            raise InputError(
                f"checkpoint does not match the ViT ({len(missing)} missing weights, e.g. "
                f"{missing[0]!r}; unexpected e.g. {list(unexpected)[:1]})",
                path,
            )
        if unexpected:
            log.info("ignored %d checkpoint entries not in the ViT (e.g. %s)", len(unexpected), unexpected[0])
        source = f"checkpoint {path}"
    elif weights == "hub":
        try:
            model = build_vit(spec, hub=True)
        except ConfigError:
            raise
        except Exception as err:  # no network, hub down, ...
            raise InputError(
                f"cannot download the hub weights of {HUB_NAME} ({type(err).__name__}: {err}); "
                "download them elsewhere and pass the file with --checkpoint"
            ) from err
        source = f"hub weights {HUB_NAME}"
    else:
        msg = (
            "NO WEIGHTS: neither a checkpoint nor hub weights were given, the ViT is RANDOMLY INITIALISED "
            "and its features are not those of a trained network (pass --checkpoint FILE, or "
            "--set weights=hub when online)"
        )
        warnings.warn(msg, RandomInitWarning, stacklevel=2)
        log.warning(msg)
        model = build_vit(spec)
        source = "random initialisation"
    model.eval()
    return model, spec, source


def save_checkpoint(path: str | Path, model: nn.Module, spec: ViTSpec, method: str = "dino", **extra: Any) -> Path:
    """Save the ViT (common checkpoint format) so that ``load_vit(checkpoint=path)`` rebuilds it."""
    from ..learn import checkpoint as ckpt

    config = asdict(spec)
    return ckpt.save(path, method=method, model_config=config, io=ckpt.vit_io(config), module=model, **extra)


def patch_tokens(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Last-layer patch tokens of tiles ``x`` (B, 3, H, W) as a (B, C, H/p, W/p) map."""
    tokens = model.forward_features(x)[:, model.num_prefix_tokens :]
    b, _, h, w = x.shape
    p = model.patch_embed.patch_size[0]
    return tokens.transpose(1, 2).reshape(b, -1, h // p, w // p)


def cls_attention(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Attention of the CLS token to every patch in the last block, per head: (B, heads, H/p, W/p).

    timm computes attention with fused kernels and does not return the weights, so we rerun
    the last block's query/key projection (the maps DINO papers visualise).
    """
    t = model.patch_embed(x)
    t = model._pos_embed(t)
    t = model.norm_pre(t)
    for blk in model.blocks[:-1]:
        t = blk(t)
    last = model.blocks[-1]
    attn = last.attn
    y = last.norm1(t)
    b, n, _ = y.shape
    qkv = attn.qkv(y).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    weights = ((q[:, :, :1] * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)[:, :, 0]
    p = model.patch_embed.patch_size[0]
    return weights[:, :, model.num_prefix_tokens :].reshape(
        b, attn.num_heads, x.shape[2] // p, x.shape[3] // p
    )
