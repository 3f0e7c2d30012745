"""Package a bundle for a collaborator: configs, docs, licence, weights and a sha256 manifest.

The package is a folder or a zip whose single top-level folder is the bundle's name (the model-zoo layout), with
``manifest.json`` next to ``configs/``. The manifest lists every other file with its sha256 and size, plus the
bundle's ``version`` and ``changelog`` copied from ``configs/metadata.json``; ``verify_bundle`` checks it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = [
    "MANIFEST_NAME",
    "MANIFEST_FORMAT",
    "DEFAULT_EXCLUDE",
    "BundlePackageError",
    "sha256_file",
    "collect_bundle_files",
    "build_manifest",
    "package_bundle",
]

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "diffusion-ssl-seg/bundle-manifest/1"
#: top-level entries of a bundle that are packaged (everything else, e.g. eval/ or outputs/, is left out).
PACKAGED_ENTRIES: tuple[str, ...] = ("configs", "docs", "LICENSE", "models", "README.md")
#: glob patterns (on the path relative to the bundle root) never packaged: resumable training state (optimizer,
#: RNG: needs pickle), the experiment runner's records of the training run (its override files hold the trainer's
#: dataset and work-folder paths; a received bundle runs with ``configs/inference.json`` alone), caches and
#: editor/OS litter.
DEFAULT_EXCLUDE: tuple[str, ...] = (
    "models/train_state*",
    "configs/runner_*.json",
    "models/*.tmp",
    "models/*.part",
    "*/__pycache__/*",
    "*.pyc",
    "*/.DS_Store",
    ".DS_Store",
    "*/.ipynb_checkpoints/*",
)
_CHUNK = 1 << 20


class BundlePackageError(ValueError):
    """Raised when a bundle cannot be packaged; the message names the bundle and the problem."""


def sha256_file(path: str | Path) -> str:
    """Return the hex sha256 of a file, read in 1 MiB chunks.

    Args:
        path: the file to hash.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _excluded(rel: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(rel, p) for p in patterns)


def collect_bundle_files(
    bundle_dir: str | Path, include_models: bool = True, exclude: Sequence[str] = DEFAULT_EXCLUDE
) -> list[str]:
    """List the files of a bundle that go into a package, as sorted POSIX paths relative to the bundle root.

    Args:
        bundle_dir: the bundle folder (holding ``configs/metadata.json``).
        include_models: include ``models/`` (weights and exported models); ``False`` ships configs and docs only.
        exclude: glob patterns matched against the relative path; matching files are left out.
    """
    root = Path(bundle_dir)
    files: list[str] = []
    for entry in PACKAGED_ENTRIES:
        if entry == "models" and not include_models:
            continue
        p = root / entry
        if p.is_file():
            candidates = [p]
        elif p.is_dir():
            candidates = sorted(q for q in p.rglob("*") if q.is_file())
        else:
            continue
        for q in candidates:
            if q.is_symlink():
                raise BundlePackageError(f"{root}: refusing to package symbolic link {q.relative_to(root).as_posix()}")
            rel = q.relative_to(root).as_posix()
            if not _excluded(rel, exclude):
                files.append(rel)
    return sorted(files)


def _read_metadata(root: Path) -> dict[str, Any]:
    meta_path = root / "configs" / "metadata.json"
    if not meta_path.is_file():
        raise BundlePackageError(f"{root}: configs/metadata.json not found; not a bundle folder")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BundlePackageError(f"{meta_path}: invalid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise BundlePackageError(f"{meta_path}: top level must be a JSON object")
    return meta


def build_manifest(bundle_dir: str | Path, files: Sequence[str], bundle_name: str | None = None) -> dict[str, Any]:
    """Build the manifest dictionary for ``files`` of a bundle.

    Args:
        bundle_dir: the bundle folder.
        files: paths relative to ``bundle_dir`` (POSIX separators) to list.
        bundle_name: name recorded in the manifest; defaults to metadata ``name`` or the folder name.
    """
    root = Path(bundle_dir)
    meta = _read_metadata(root)
    version = meta.get("version")
    changelog = meta.get("changelog", {})
    entries = []
    for rel in files:
        p = root / rel
        entries.append({"path": rel, "sha256": sha256_file(p), "size": p.stat().st_size})
    return {
        "format": MANIFEST_FORMAT,
        "bundle_name": bundle_name or meta.get("name") or root.resolve().name,
        "version": version,
        "changelog": changelog,
        "current_change": changelog.get(version) if isinstance(changelog, dict) else None,
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "hash_algorithm": "sha256",
        "files": entries,
    }


def package_bundle(
    bundle_dir: str | Path,
    out_path: str | Path,
    include_models: bool = True,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    bundle_name: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Package a bundle with a sha256 manifest, as a zip (``out_path`` ends in ``.zip``) or a folder.

    The package holds ``<bundle_name>/manifest.json`` and ``<bundle_name>/{configs,docs,LICENSE,models}``; files
    matching ``exclude`` (by default the resumable ``models/train_state*.pt``) are left out. Missing required files
    are not an error here (``verify_bundle`` reports them), but a bundle without ``configs/metadata.json`` is.

    Args:
        bundle_dir: the bundle folder to package.
        out_path: destination: ``*.zip`` writes a zip archive, anything else a folder (which must not exist
            unless ``overwrite``).
        include_models: ship ``models/`` (weights, exported models). ``False`` packages configs and docs only.
        exclude: glob patterns (relative paths) of files to leave out.
        bundle_name: name of the top-level folder inside the package; defaults to the bundle folder's name.
        overwrite: replace an existing ``out_path``.

    Returns:
        the path written (the zip file, or the bundle folder inside the output folder).

    Raises:
        BundlePackageError: ``bundle_dir`` is not a bundle, ``out_path`` exists, or ``out_path`` lies inside
            ``bundle_dir``.
    """
    root = Path(bundle_dir).resolve()
    if not root.is_dir():
        raise BundlePackageError(f"{bundle_dir}: bundle folder not found")
    out = Path(out_path).resolve()
    if out == root or root in out.parents:
        raise BundlePackageError(f"{out_path}: output must lie outside the bundle folder {bundle_dir}")
    if out.exists():
        if not overwrite:
            raise BundlePackageError(f"{out_path}: already exists (pass overwrite=True to replace it)")
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    name = bundle_name or root.name
    files = collect_bundle_files(root, include_models=include_models, exclude=exclude)
    manifest = build_manifest(root, files, bundle_name=name)
    manifest_bytes = (json.dumps(manifest, indent=2) + "\n").encode("utf-8")

    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".zip":
        # write to a temporary file next to the target, then rename: no half-written package on failure
        fd, tmp_name = tempfile.mkstemp(dir=out.parent, suffix=".zip.part")
        tmp = Path(tmp_name)
        try:
            with open(fd, "wb") as fh, zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                zf.writestr(f"{name}/{MANIFEST_NAME}", manifest_bytes)
                for rel in files:
                    zf.write(root / rel, arcname=f"{name}/{rel}")
            tmp.replace(out)
        finally:
            if tmp.exists():
                tmp.unlink()
        return out
    target = out / name
    target.mkdir(parents=True)
    for rel in files:
        dst = target / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, dst)
    (target / MANIFEST_NAME).write_bytes(manifest_bytes)
    return target
