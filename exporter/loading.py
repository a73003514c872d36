"""Resolve a model spec (``package.module:factory`` or ``path/to/file.py:factory``) and load a checkpoint."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mrdeploy.errors import ExportError, first_line

_MAX_KEYS = 8


def _names(keys, limit: int = _MAX_KEYS) -> str:
    keys = sorted(keys)
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")


def _import_file(path: Path):
    """Import a Python file as a module; its directory is on sys.path while it runs."""
    name = f"_mrdeploy_user_{path.stem}_{abs(hash(str(path.resolve()))) & 0xFFFFFF:06x}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ExportError(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(path.resolve().parent))
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise ExportError(f"importing {path} failed: {type(e).__name__}: {e}") from e
    finally:
        sys.path.remove(str(path.resolve().parent))
    return module


def resolve_factory(spec: str):
    """``"pkg.mod:fn"`` or ``"path/file.py:fn"`` -> the callable ``fn``."""
    module_part, sep, attr = str(spec).rpartition(":")
    if not sep or not module_part or not attr or not attr.isidentifier():
        raise ExportError(
            f"model spec {spec!r} does not parse: expected 'package.module:factory' or 'path/to/file.py:factory'"
        )
    if module_part.endswith(".py") or os.sep in module_part or "/" in module_part:
        path = Path(module_part)
        if not path.is_file():
            raise ExportError(f"model spec {spec!r}: file {path} does not exist")
        module = _import_file(path)
    else:
        cwd = os.getcwd()
        added = cwd not in sys.path
        if added:
            sys.path.insert(0, cwd)
        try:
            module = importlib.import_module(module_part)
        except ModuleNotFoundError as e:
            raise ExportError(f"model spec {spec!r}: module {module_part!r} not found ({e})") from e
        except Exception as e:
            raise ExportError(f"model spec {spec!r}: importing {module_part!r} failed: {type(e).__name__}: {e}") from e
        finally:
            if added and cwd in sys.path:
                sys.path.remove(cwd)
    factory = getattr(module, attr, None)
    if factory is None:
        raise ExportError(f"model spec {spec!r}: {module_part} has no attribute {attr!r}")
    if not callable(factory):
        raise ExportError(f"model spec {spec!r}: {attr} is a {type(factory).__name__}, not a callable factory")
    return factory


def build_model(spec: str, model_args: Mapping[str, Any] | None = None):
    """Call the factory named by ``spec`` with ``model_args``; it must return an nn.Module."""
    from torch import nn

    factory = resolve_factory(spec)
    try:
        model = factory(**dict(model_args or {}))
    except Exception as e:
        raise ExportError(f"model factory {spec!r} raised {type(e).__name__}: {e}") from e
    if not isinstance(model, nn.Module):
        raise ExportError(f"model factory {spec!r} returned a {type(model).__name__}, expected a torch nn.Module")
    return model


def read_state_dict(path: str | os.PathLike) -> dict:
    """``torch.load(path, weights_only=True)``, unwrapping ``{"state_dict": ...}`` / ``{"model": ...}``."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = first_line(e)
        raise ExportError(
            f"checkpoint {path} cannot be loaded with torch.load(weights_only=True): {first[:300]}"
        ) from e
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise ExportError(
            f"checkpoint {path} holds a {type(obj).__name__}, expected a state dict "
            "(a dict of tensors, or a dict holding one under 'state_dict' or 'model')"
        )
    bad = {k: type(v).__name__ for k, v in obj.items() if not isinstance(v, torch.Tensor)}
    if bad or not obj:
        what = ", ".join(f"{k!r} is a {t}" for k, t in list(bad.items())[:4]) if bad else "it is empty"
        raise ExportError(f"checkpoint {path} is not a state dict of tensors: {what}")
    state = dict(obj)
    if all(k.startswith("module.") for k in state):  # saved from DataParallel / DDP
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_checkpoint(model, path: str | os.PathLike) -> None:
    """Load a state dict into ``model``; any missing/unexpected key or shape mismatch is an ExportError."""
    state = read_state_dict(path)
    own = model.state_dict()
    missing = set(own) - set(state)
    unexpected = set(state) - set(own)
    shapes = [
        f"{k!r} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {_names(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_names(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches: {'; '.join(shapes[:_MAX_KEYS])}")
        raise ExportError(f"checkpoint {path} does not match the model: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def load_model(model, model_args: Mapping[str, Any] | None = None, checkpoint=None):
    """An nn.Module or a spec string -> the eval-mode model, with ``checkpoint`` loaded if given."""
    from torch import nn

    if isinstance(model, str):
        model = build_model(model, model_args)
    elif not isinstance(model, nn.Module):
        raise ExportError(f"model must be an nn.Module or a 'module:factory' string, got {type(model).__name__}")
    elif model_args:
        raise ExportError("model_args only apply when the model is given as a 'module:factory' string")
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model.eval()
