#!/usr/bin/env python
"""Verify a received bundle (folder or zip) offline before running it; exit status 1 on failure.

    python scripts/verify_bundle.py cotrain-1.0.0.zip
    python scripts/verify_bundle.py bundles/cotrain --no-manifest    # your own, never packaged bundle
    python scripts/verify_bundle.py cotrain --no-manifest --accept-review   # after reading every REVIEW item

Rejected items (code execution, nested configs, unpickling loads) always fail; items to review (callables not
on the allowlist) and code files fail unless --accept-review.
"""

from __future__ import annotations

import argparse
import json
import sys

from custom_components.bundle_tools.verify import verify_bundle


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: arguments (defaults to ``sys.argv[1:]``).
    """
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", help="bundle folder, packaged folder or .zip")
    ap.add_argument("--no-manifest", action="store_true", help="a missing manifest.json is a warning, not an error")
    ap.add_argument("--accept-review", action="store_true",
                    help="items to review and code files are warnings (read them first); rejected items still fail")
    ap.add_argument("--strict", action="store_true", help="no effect: items to review fail unless --accept-review")
    ap.add_argument("--skip-weights", action="store_true", help="do not torch.load the weights")
    ap.add_argument("--quiet", action="store_true", help="list only executable items that are not allowed")
    ap.add_argument("--json", dest="json_out", default=None, help="also write the report as JSON to this file")
    a = ap.parse_args(argv)
    report = verify_bundle(a.path, require_manifest=not a.no_manifest, check_weights=not a.skip_weights,
                           accept_review=a.accept_review)
    print(report.format(show_allowed=not a.quiet))
    if a.json_out:
        with open(a.json_out, "w", encoding="utf-8") as f:
            json.dump(report.to_dict(), f, indent=2)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
