#!/usr/bin/env python
"""Package a bundle for a collaborator: configs, docs, LICENSE, weights and manifest.json (sha256 of every file).

    python scripts/package_bundle.py bundles/cotrain dist/cotrain-1.0.0.zip
"""

from __future__ import annotations

import argparse
import sys

from custom_components.bundle_tools.package import DEFAULT_EXCLUDE, BundlePackageError, package_bundle


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: arguments (defaults to ``sys.argv[1:]``).
    """
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle_dir", help="bundle folder (holding configs/metadata.json)")
    ap.add_argument("out_path", help="output: *.zip for an archive, otherwise a folder")
    ap.add_argument("--no-models", action="store_true", help="leave models/ out (configs and docs only)")
    ap.add_argument("--exclude", action="append", default=None,
                    help=f"glob of relative paths to leave out (repeatable; default {list(DEFAULT_EXCLUDE)})")
    ap.add_argument("--name", default=None,
                    help="top-level folder name inside the package (default: bundle folder name)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing output")
    a = ap.parse_args(argv)
    try:
        out = package_bundle(a.bundle_dir, a.out_path, include_models=not a.no_models,
                             exclude=tuple(a.exclude) if a.exclude else DEFAULT_EXCLUDE,
                             bundle_name=a.name, overwrite=a.overwrite)
    except BundlePackageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"packaged {a.bundle_dir} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
