"""Stale results can not pass for new ones: what a training run was made from, recorded beside its checkpoints.

:func:`data_fingerprint` hashes a datalist's content and the size and modification time of every file it lists
(the experiment runner records it for each phase). :func:`check_same_run` (called in every training config's
``initialize``) writes ``<ckpt_dir>/run_record.json`` (the datalist relative to ``ckpt_dir``, its data fingerprint
and the trained settings) and, when ``ckpt_dir`` already holds a run (``train_state.pt``), refuses to resume or to
report a finished run as done when the datalist, its files or a setting differ, saying which one and how to
retrain.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import UserError
from .distributed import is_rank_zero
from .files import atomic_write_json

__all__ = ["RUN_RECORD", "RerunError", "data_files", "data_fingerprint", "check_same_run"]

#: the record written into ``ckpt_dir``
RUN_RECORD = "run_record.json"
#: files whose presence means ``ckpt_dir`` holds a started or finished run
_STATE_FILES = ("train_state.pt", "train_state.pt.prev")
_LISTS = ("labeled", "unlabeled", "validation", "test", "cases")


class RerunError(UserError, ValueError):
    """A training command was rerun in a folder that holds a run made with other data or settings."""


def data_files(datalist: str | os.PathLike) -> dict[str, list[int]]:
    """``path -> [size, mtime_ns]`` of every image and label a datalist lists (``[-1, -1]`` for a missing file);
    the paths as the datalist writes them (relative to its folder, or absolute).

    Args:
        datalist: a datalist JSON.
    """
    p = Path(datalist)
    data = json.loads(p.read_text())
    out: dict[str, list[int]] = {}
    for key in _LISTS:
        for e in data.get(key, []) if isinstance(data, dict) else []:
            for k in ("image", "label"):
                if isinstance(e, dict) and isinstance(e.get(k), str):
                    try:
                        st = os.stat(os.path.join(p.parent, e[k]))
                        out[e[k]] = [st.st_size, st.st_mtime_ns]
                    except OSError:
                        out[e[k]] = [-1, -1]
    return out


def data_fingerprint(datalist: str | os.PathLike) -> str:
    """Short hash of a datalist's bytes and of the size and modification time of every file it lists.

    Re-preparing a dataset in place (same names, new files) or editing the datalist changes it.

    Args:
        datalist: the datalist file.
    """
    h = hashlib.sha256(Path(datalist).read_bytes())
    h.update(json.dumps(sorted(data_files(datalist).items())).encode())
    return h.hexdigest()[:16]


def _plain(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def check_same_run(ckpt_dir: str | os.PathLike, datalist: str | os.PathLike,
                   settings: Mapping[str, Any] | None = None) -> None:
    """Refuse a training rerun in a folder holding a run made with another datalist, other data or settings.

    When ``ckpt_dir`` holds ``train_state.pt`` (a started or finished run) and ``run_record.json``, the datalist
    path, its :func:`data_fingerprint` and every value of ``settings`` must equal the recorded ones; otherwise
    ``RerunError`` names what differs and how to retrain. ``max_epochs`` is not compared (raising it continues a
    finished run). Then the record is (re)written (rank 0). A ``ckpt_dir`` that exists as a file is left to the
    config's own folder creation, which names it.

    Args:
        ckpt_dir: the training's checkpoint folder.
        datalist: the datalist the run reads.
        settings: further values to compare (e.g. the config's ``trained_settings``: architecture, geometry).

    Raises:
        RerunError: naming the folder, each difference and how to retrain.
    """
    ckpt = Path(ckpt_dir)
    if ckpt.exists() and not ckpt.is_dir():
        return
    files = data_files(datalist)
    # relative to ckpt_dir: a trained folder that is shared holds no absolute path of the training machine
    now = {"datalist": os.path.relpath(Path(datalist).resolve(), ckpt.resolve()),
           "data_fingerprint": data_fingerprint(datalist),
           "settings": _plain(dict(settings or {}))}
    record = ckpt / RUN_RECORD
    started = any((ckpt / f).is_file() for f in _STATE_FILES)
    if started and record.is_file():
        try:
            old = json.loads(record.read_text())
        except (OSError, ValueError):
            old = {}
        diffs = []
        if old.get("datalist") not in (None, now["datalist"]):
            diffs.append(f"datalist: was '{old['datalist']}', now '{now['datalist']}'")
        elif old.get("data_fingerprint") not in (None, now["data_fingerprint"]):
            old_files = old.get("files", {})
            changed = [f for f in sorted(set(files) | set(old_files)) if files.get(f) != old_files.get(f)]
            example = f", e.g. {changed[0]}" if changed else " (the datalist itself was edited)"
            diffs.append(f"the data: {len(changed)} file(s) listed in {now['datalist']} were replaced, changed, "
                         f"added or removed since that run{example}")
        old_s = old.get("settings", {})
        for k in sorted(set(old_s) | set(now["settings"])):
            if k in old_s and old_s.get(k) != now["settings"].get(k):
                diffs.append(f"{k}: was {json.dumps(old_s.get(k))}, now {json.dumps(now['settings'].get(k))}")
        if diffs:
            raise RerunError(
                f"{ckpt}: holds a run made with other data or settings ({record}): " + "; ".join(diffs) + ". Its "
                "checkpoints would be resumed, or reported as done, as if they came from this command. To train "
                "anew, use another folder (--bundle_root NEW or --ckpt_dir NEW), or delete "
                f"{ckpt / 'train_state.pt'}* and {record}; to continue that run, use its own data and settings.")
    if is_rank_zero():
        atomic_write_json({**now, "files": files}, record)
