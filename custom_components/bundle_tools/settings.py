"""Make a trained bundle folder self-contained: write the settings a run was trained with into its own configs.

A training config calls :func:`record_trained_settings` in its ``initialize`` (after the datalist check, before
the first checkpoint) for the bundle folder above its ``ckpt_dir``, with the *evaluated* values of the top-level
ids every config of the bundle shares (``trained_settings``: data geometry, architecture, diffusion schedule and
its arguments, inference ``t`` and seed). Each value is written into every one of ``configs/train.json``,
``inference.json`` and ``evaluate.json``
that has that top-level id, so ``python -m monai.bundle run --config_file configs/inference.json --dataset_dir
NEW`` and ``python -m monai.bundle ckpt_export ...`` in that folder build the network that was trained, with no
override. A stacked profile (``configs/profile_3d.json``, which names itself as ``stacked_profile``) is merged
into ``train.json`` and ``inference.json`` first (and into ``evaluate.json`` for the ids it has), so a 3D-trained
folder runs without stacking it again. ``metadata.json``'s ``network_data_format`` is rewritten to describe the
trained network; when it changes, the patch version is bumped and a changelog line added.

Only changed files are rewritten (atomically); the location ids (``bundle_root``, ``dataset_dir``, ...) are never
written. See docs/sharing.md.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..runtime.distributed import is_rank_zero
from ..runtime.files import atomic_write_json

logger = logging.getLogger(__name__)

__all__ = ["TARGET_CONFIGS", "record_trained_settings", "record_threshold", "network_data_format"]

TARGET_CONFIGS = ("train.json", "inference.json", "evaluate.json")
_STANDALONE = ("train.json", "inference.json")  # configs run on their own (evaluate.json is stacked on train.json)
_LOCATION_IDS = frozenset({"bundle_root", "device", "dataset_dir", "datalist", "output_dir", "ckpt_dir", "ckpt_path",
                           "tensorboard_dir", "teacher_ckpt", "input_dir"})


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_json(obj, path, indent=4)


def _plain(value: Any, key: str) -> Any:
    """The JSON form of an evaluated setting (tuples become lists); anything else is an error naming the id."""
    try:
        return json.loads(json.dumps(value))
    except TypeError as e:
        raise TypeError(f"trained_settings#{key}: {type(value).__name__} is not a JSON value ({e})") from e


def _channel_names(n: int, kind: str, names: Mapping[Any, Any] | None = None) -> dict[str, str]:
    if names:
        return {str(i): str(names.get(str(i), names.get(i, f"class {i}"))) for i in range(n)}
    if kind == "image":
        return {"0": "R", "1": "G", "2": "B"} if n == 3 else (
            {"0": "image"} if n == 1 else {str(i): f"channel {i}" for i in range(n)})
    return {"0": "background", "1": "foreground"} if n == 2 else {str(i): f"class {i}" for i in range(n)}


def network_data_format(current: Mapping[str, Any], settings: Mapping[str, Any],
                        class_names: Mapping[Any, Any] | None = None
                        ) -> dict[str, Any]:
    """``network_data_format`` of ``metadata.json`` for the trained network described by ``settings``.

    Args:
        current: the bundle's current ``network_data_format`` (kept where the settings say nothing).
        settings: evaluated settings (``spatial_dims``, ``in_channels``, ``num_classes``, optional ``channels``).
        class_names: optional class index -> name (the datalist's ``labels``).
    """
    fmt = json.loads(json.dumps(current))
    image, pred = fmt["inputs"]["image"], fmt["outputs"]["pred"]
    dims = int(settings.get("spatial_dims", len(image["spatial_shape"])))
    if "channels" in settings:
        size = f"{2 ** (len(settings['channels']) - 1)}*n"
    else:
        size = image["spatial_shape"][0]
    if "in_channels" in settings:
        c = int(settings["in_channels"])
        image["num_channels"] = c
        image["channel_def"] = _channel_names(c, "image")
        image["modality"] = "RGB" if c == 3 else (
            "image" if image.get("modality") == "RGB" else image.get("modality", "image"))
    if "num_classes" in settings:
        k = int(settings["num_classes"])
        pred["num_channels"] = k
        pred["channel_def"] = _channel_names(k, "label", class_names)
    image["spatial_shape"] = [size] * dims
    pred["spatial_shape"] = [size] * dims
    return fmt


def _bump_patch(version: str) -> str:
    major, minor, patch = (version.split("+")[0].split("-")[0].split(".") + ["0", "0"])[:3]
    return f"{major}.{minor}.{int(patch) + 1}"


def record_trained_settings(
    ckpt_dir: str | os.PathLike,
    settings: Mapping[str, Any],
    stacked_profile: str | None = None,
    class_names: Mapping[Any, Any] | None = None,
) -> list[str]:
    """Write the settings a bundle is trained with into its own configs and metadata (rank 0 only under DDP).

    Args:
        ckpt_dir: the folder the run writes its models to; the configs written are those of the bundle folder
            above it (``<ckpt_dir>/../configs``), so the model and its settings stay together. Nothing is written
            when there is no such folder (a run whose ``ckpt_dir`` points elsewhere).
        settings: evaluated values of the shared top-level ids (``trained_settings`` of the training config).
        stacked_profile: file name under ``configs/`` of a profile stacked on the training config, merged into the
            configs (``None``: none).
        class_names: optional class index -> name for ``channel_def`` of the output.

    Returns:
        the names of the files rewritten.
    """
    if not is_rank_zero() or os.environ.get("RANK", "0") != "0":
        return []  # one writer under torchrun (initialize may run before the process group exists)
    cfg_dir = Path(ckpt_dir).resolve().parent / "configs"
    if not cfg_dir.is_dir():
        logger.warning(f"{cfg_dir}: no bundle configs next to ckpt_dir {ckpt_dir}; trained settings not recorded")
        return []
    values = {k: _plain(v, k) for k, v in settings.items() if k not in _LOCATION_IDS}
    profile: dict[str, Any] = {}
    if stacked_profile:
        p = cfg_dir / stacked_profile
        if not p.is_file():
            raise FileNotFoundError(f"{p}: stacked_profile names a file that does not exist")
        profile = {k: v for k, v in json.loads(p.read_text(encoding="utf-8")).items() if k not in _LOCATION_IDS}
    written = []
    for name in TARGET_CONFIGS:
        path = cfg_dir / name
        if not path.is_file():
            continue
        cfg = json.loads(path.read_text(encoding="utf-8"))
        new = dict(cfg)
        for k, v in profile.items():
            if name in _STANDALONE or k in cfg:
                new[k] = v
        for k, v in values.items():
            if k in new:
                new[k] = v
        if new != cfg:
            _write_json(path, new)
            written.append(name)
    meta_path = cfg_dir / "metadata.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if "network_data_format" in meta:
            fmt = network_data_format(meta["network_data_format"], values, class_names)
            if fmt != meta["network_data_format"]:
                meta["network_data_format"] = fmt
                version = _bump_patch(str(meta.get("version", "0.0.0")))
                image, pred = fmt["inputs"]["image"], fmt["outputs"]["pred"]
                meta["version"] = version
                meta.setdefault("changelog", {})
                meta["changelog"] = {version: (
                    f"trained network: {len(image['spatial_shape'])}D, {image['num_channels']} input channel(s), "
                    f"{pred['num_channels']} classes (network_data_format written by training)"), **meta["changelog"]}
                _write_json(meta_path, meta)
                written.append("metadata.json")
    return written


def record_threshold(ckpt_dir: str | os.PathLike, threshold: float) -> bool:
    """Write the binary foreground threshold chosen on validation into ``metadata.json`` (``threshold``) of the
    bundle folder above ``ckpt_dir``, so an exported model (which embeds ``metadata.json``) carries it.

    Args:
        ckpt_dir: the folder the run writes its models to.
        threshold: the threshold saved with the model in ``model_selection.json``.

    Returns:
        whether ``metadata.json`` was rewritten (not when there is none, or it already holds the value).
    """
    meta_path = Path(ckpt_dir).resolve().parent / "configs" / "metadata.json"
    if not meta_path.is_file():
        return False
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    value = round(float(threshold), 4)
    if not isinstance(meta, dict) or meta.get("threshold") == value:
        return False
    meta["threshold"] = value
    _write_json(meta_path, meta)
    return True
