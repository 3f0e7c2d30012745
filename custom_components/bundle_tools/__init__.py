"""Tools to package, verify and export bundles (see docs/sharing.md)."""

from .export import (
    ExportError,
    build_bundle_network,
    check_parity,
    export_onnx,
    export_torchscript,
    load_exported,
    metadata_input_shape,
    record_export,
    verify_exported_in_out,
)
from .package import (
    MANIFEST_NAME,
    BundlePackageError,
    build_manifest,
    collect_bundle_files,
    package_bundle,
    sha256_file,
)
from .verify import (
    ALLOWED_CALLABLES,
    ALLOWED_TARGETS,
    SCHEMA_PATH,
    ExecutableItem,
    Issue,
    VerificationReport,
    analyze_expression,
    classify_target,
    scan_config_file,
    validate_metadata,
    verify_bundle,
)

__all__ = [
    "ALLOWED_CALLABLES", "ALLOWED_TARGETS", "SCHEMA_PATH", "MANIFEST_NAME", "BundlePackageError", "ExportError",
    "ExecutableItem", "Issue", "VerificationReport", "analyze_expression", "build_bundle_network", "build_manifest",
    "check_parity", "classify_target", "collect_bundle_files", "export_onnx", "export_torchscript", "load_exported",
    "metadata_input_shape", "package_bundle", "record_export", "scan_config_file", "sha256_file",
    "validate_metadata", "verify_bundle", "verify_exported_in_out",
]
