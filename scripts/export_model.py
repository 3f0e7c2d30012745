#!/usr/bin/env python
"""Export a bundle's deployable network to TorchScript (monai.bundle.ckpt_export) and/or ONNX, check parity
against the eager network at the export shape and two other input sizes, and run monai.bundle.verify_net_in_out
on the TorchScript file.

    python scripts/export_model.py bundles/cotrain --format torchscript onnx
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from custom_components.bundle_tools.export import (
    ExportError,
    build_bundle_network,
    check_parity,
    export_onnx,
    export_torchscript,
    metadata_input_shape,
    verify_exported_in_out,
)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: arguments (defaults to ``sys.argv[1:]``).
    """
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle_dir")
    ap.add_argument("--format", nargs="+", choices=["torchscript", "onnx"], default=["torchscript"])
    ap.add_argument("--net-id", default="network_def")
    ap.add_argument("--config-file", default=None, help="default: configs/inference.json, else configs/train.json")
    ap.add_argument("--ckpt-file", default=None, help="default: models/model.pt")
    ap.add_argument("--input-shape", default=None, help="JSON list [N,C,*spatial]; default from metadata.json")
    ap.add_argument("--trace", choices=["auto", "yes", "no"], default="auto", help="TorchScript: script or trace")
    ap.add_argument("--atol", type=float, default=1e-5, help="parity tolerance (TorchScript); ONNX uses 10x")
    ap.add_argument("--no-record", action="store_true", help="do not record the export in metadata.json")
    a = ap.parse_args(argv)
    root = Path(a.bundle_dir)
    meta = root / "configs" / "metadata.json"
    shape = json.loads(a.input_shape) if a.input_shape else metadata_input_shape(meta)
    net = build_bundle_network(root, a.net_id, a.config_file, a.ckpt_file)
    # parity at the export shape and at two other sizes the network accepts ("k*n" sizes of metadata.json, n = 3, 5)
    inputs = [torch.rand(*shape)] + [torch.rand(*metadata_input_shape(meta, batch=b, n=n)) for b, n in ((1, 3), (2, 5))]
    status = 0
    for fmt in a.format:
        try:
            if fmt == "torchscript":
                out = export_torchscript(root, net_id=a.net_id, config_file=a.config_file, ckpt_file=a.ckpt_file,
                                         use_trace={"auto": None, "yes": True, "no": False}[a.trace],
                                         input_shape=shape, record_in_metadata=not a.no_record)
                diff = check_parity(net, out, inputs, atol=a.atol)
                verify_exported_in_out(root, out, a.config_file, a.net_id)
            else:
                out = export_onnx(root, input_shape=shape, net_id=a.net_id, config_file=a.config_file,
                                  ckpt_file=a.ckpt_file, record_in_metadata=not a.no_record)
                diff = check_parity(net, out, inputs, atol=10 * a.atol)
            print(f"{fmt}: {out} (max |exported - eager| = {diff:.2e} on {[list(x.shape) for x in inputs]})")
        except (ExportError, AssertionError, ImportError) as e:
            print(f"{fmt}: FAILED: {e}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
