"""Offline verification of a received bundle (folder or zip) before anything in it runs.

Checks, in order: required files; ``configs/metadata.json`` against the schema kept in this repository
(``schema/metadata.schema.json``); ``manifest.json`` hashes (a changed byte or a file that the manifest does not
list fails, naming the file); weights loadable with ``torch.load(weights_only=True)``; code files; and every
executable item of every file a config can reach (each ``.json``/``.yaml``/``.yml`` file of the bundle, in any
case, and ``configs/logging.conf``): each ``$`` expression (parsed with :mod:`ast`, never evaluated), each
``_target_`` with its arguments, each ``%`` macro.

Every callable is judged by its full name against allowlists derived from what this repository's bundles use
(:data:`ALLOWED_TARGETS`, :data:`ALLOWED_CALLABLES`, :data:`ALLOWED_VALUES`, :data:`ALLOWED_IMPORTS`,
:data:`ALLOWED_METHODS`; no whole namespace is allowed). What runs processes, executes code, parses nested
configs or deserialises (``run_cmd``, ``monai.bundle.*``, ``ConfigParser``, ``*.load``, ``eval``, ...) is
*rejected*; anything else not on the allowlists is *to review*. Rejected items always fail; review items and code
files fail unless ``accept_review`` is set.

Nothing in the bundle is imported, instantiated or evaluated.
"""

from __future__ import annotations

import ast
import builtins
import configparser
import importlib.util
import json
import re
import stat
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .package import MANIFEST_NAME, sha256_file

__all__ = [
    "ALLOWED_TARGETS",
    "ALLOWED_CALLABLES",
    "ALLOWED_VALUES",
    "ALLOWED_IMPORTS",
    "ALLOWED_METHODS",
    "SCHEMA_PATH",
    "Issue",
    "ExecutableItem",
    "VerificationReport",
    "load_metadata_schema",
    "validate_metadata",
    "scan_config_file",
    "analyze_expression",
    "expression_names",
    "classify_target",
    "verify_bundle",
]

SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "metadata.schema.json"

# The allowlists: exactly what bundles/*/configs use (tests/bundle_tools/test_package_verify.py checks that each
# set equals the bundles' use). A new callable in a bundle fails that test: review it, then add it here.
#: ``_target_`` values and ``reader``/``writer`` names, as written (bare names are resolved by MONAI among its own
#: components).
ALLOWED_TARGETS: frozenset[str] = frozenset({
    "Activationsd", "AsDiscreted", "CacheDataset", "CheckpointLoader", "CheckpointSaver", "Compose", "CopyItemsd",
    "DataLoader", "Dataset", "DiceCELoss", "DistributedSampler", "EnsureChannelFirstd", "EnsureTyped", "Identityd",
    "Invertd", "LoadImaged", "LrScheduleHandler", "MeanDice", "MeanIoUHandler", "MetricsSaver",
    "NormalizeIntensityd", "RandAffined", "RandCropByPosNegLabeld", "RandFlipd", "RandRotate90d",
    "RandScaleIntensityd", "RandShiftIntensityd", "RandSpatialCropSamplesd", "RandSpatialCropd",
    "ResizeWithPadOrCropd", "Resized", "SaveImaged", "ScaleIntensityRanged", "ScaleIntensityd", "SimpleInferer",
    "SlidingWindowInferer", "Spacingd", "SpatialPadd", "StatsHandler", "SupervisedEvaluator", "SupervisedTrainer",
    "TensorBoardStatsHandler", "UNet", "ValidationHandler", "custom_components.data.datalist.validate_datalist",
    "custom_components.data.loaders.PairedLoader", "custom_components.engines.BCPTrainer",
    "custom_components.engines.CPSTrainer", "custom_components.engines.CoTrainer",
    "custom_components.engines.DualNetworkEvaluator", "custom_components.engines.MeanTeacherTrainer",
    "custom_components.engines.SemiSupervisedTrainer", "custom_components.engines.TeacherMonitorEvaluator",
    "custom_components.engines.TeacherPretrainTrainer", "custom_components.engines.UAMTTrainer",
    "custom_components.engines.UniMatchTrainer", "custom_components.handlers.NaNGuard",
    "custom_components.handlers.ResumableCheckpoint", "custom_components.handlers.SelectedModelSaver",
    "custom_components.handlers.pseudolabel_writer.PseudoLabelWriter",
    "custom_components.handlers.report.SegmentationReport",
    "custom_components.handlers.tensorboard.LazySummaryWriter",
    "custom_components.inferers.UAMTSlidingWindowInferer",
    "custom_components.inferers.multiround.MultiRoundPseudoLabelInferer", "custom_components.losses.CPSLoss",
    "custom_components.losses.HardTargetDiceLoss", "custom_components.metrics.BestAssignmentDice",
    "custom_components.metrics.OutputAverage", "custom_components.networks.DiffusionTeacher",
    "custom_components.networks.MaskPathwaySegmenter", "custom_components.transforms.ThresholdForegroundd",
    "custom_components.transforms.labels.FillMissingLabeld",
    "custom_components.transforms.palette.PalettePNGWriter",
    "custom_components.transforms.pseudolabel.ConfidenceScored",
    "custom_components.transforms.uncertainty.PredictiveEntropyd", "ignite.handlers.ProgressBar",
    "torch.nn.parallel.DistributedDataParallel", "torch.optim.Adam", "torch.optim.lr_scheduler.LinearLR",
    "torch.optim.lr_scheduler.SequentialLR", "torch.optim.lr_scheduler.StepLR",
})
#: callables called in ``$`` expressions, by full name (``np`` is ``numpy``; builtins by their bare name).
ALLOWED_CALLABLES: frozenset[str] = frozenset({
    "float", "isinstance", "len", "list", "max", "range", "str",
    "custom_components.bundle_tools.settings.record_trained_settings", "custom_components.bundle_utils.bundle_root",
    "custom_components.data.datalist.folder_entries", "custom_components.data.datalist.load_datalist",
    "custom_components.data.datalist.validate_datalist", "custom_components.data.datalist.validate_inference_input",
    "custom_components.engines.LinearRampUp", "custom_components.engines.ProgressRampUp",
    "custom_components.engines.SigmoidRampUp", "custom_components.engines.phase1_gate",
    "custom_components.engines.evaluation_threshold", "custom_components.engines.selected_threshold",
    "custom_components.handlers.pseudolabel_writer.check_output_dir",
    "custom_components.handlers.pseudolabel_writer.pending_entries", "custom_components.handlers.selection_mode",
    "custom_components.handlers.tracking.use_output_transform", "custom_components.metrics.OutputAverage",
    "custom_components.networks.ChannelProbe", "custom_components.networks.MaskPathwaySegmenter.from_teacher",
    "custom_components.networks.align_teacher_classes", "custom_components.networks.check_spatial_size",
    "custom_components.networks.check_weights", "custom_components.networks.load_teacher_weights",
    "custom_components.runtime.distributed.distributed_device",
    "custom_components.runtime.distributed.init_distributed",
    "custom_components.runtime.distributed.rank_zero_handlers",
    "custom_components.runtime.distributed.wrap_backbones", "custom_components.runtime.fastpath.native_bf16",
    "custom_components.runtime.fastpath.set_backend_flags", "custom_components.runtime.rerun.check_same_run",
    "monai.data.load_decathlon_datalist", "monai.handlers.from_engine", "monai.utils.set_determinism",
    "os.makedirs", "pathlib.Path", "torch.cuda.is_available", "torch.cuda.set_device", "torch.device",
    "torch.distributed.destroy_process_group", "torch.distributed.get_rank", "torch.distributed.init_process_group",
    "torch.distributed.is_initialized", "torch.nn.Sequential", "torch.nn.Softmax",
    "torch.optim.swa_utils.AveragedModel", "torch.optim.swa_utils.get_ema_multi_avg_fn",
})
#: dotted names read in ``$`` expressions without being called (dtypes, handler classes passed as values).
ALLOWED_VALUES: frozenset[str] = frozenset({
    "custom_components.handlers.NaNGuard", "custom_components.handlers.ResumableCheckpoint",
    "monai.handlers.LrScheduleHandler", "monai.handlers.StatsHandler", "monai.handlers.TensorBoardStatsHandler",
    "monai.handlers.ValidationHandler", "numpy.float32", "numpy.uint8", "os.environ", "torch.float32", "torch.int64",
})
#: modules imported by ``$import ...`` items.
ALLOWED_IMPORTS: frozenset[str] = frozenset({
    "custom_components", "custom_components.bundle_tools.settings", "custom_components.bundle_utils",
    "custom_components.data.datalist", "custom_components.engines", "custom_components.handlers",
    "custom_components.handlers.pseudolabel_writer", "custom_components.handlers.tensorboard",
    "custom_components.handlers.tracking", "custom_components.networks", "custom_components.runtime.distributed",
    "custom_components.runtime.fastpath", "custom_components.transforms", "custom_components.transforms.pseudolabel",
    "custom_components.transforms.uncertainty", "glob", "ignite", "json", "monai", "numpy", "os", "pathlib", "torch",
})
#: methods called on config references (``@network.to(...)``), comprehension variables and call results.
ALLOWED_METHODS: frozenset[str] = frozenset({"attach", "get", "items", "mkdir", "parameters", "run", "startswith",
                                             "to"})

#: names MONAI puts in every expression's globals (``np`` is numpy).
_DEFAULT_GLOBALS = {"np": "numpy"}
#: modules whose use in a config means code execution, process control, files, network or low-level memory access.
_FORBIDDEN_MODULES = frozenset(
    {"os", "subprocess", "sys", "shutil", "importlib", "pickle", "marshal", "shelve", "dill", "cloudpickle",
     "joblib", "socket", "urllib", "http", "requests", "ftplib", "smtplib", "ctypes", "cffi", "builtins", "pty",
     "multiprocessing", "signal", "code", "codeop", "runpy", "pdb", "tempfile", "webbrowser", "asyncio",
     "threading", "logging", "yaml", "io"}
)
_FORBIDDEN_BUILTINS = frozenset(
    {"eval", "exec", "compile", "__import__", "open", "getattr", "setattr", "delattr", "globals", "locals",
     "vars", "input", "breakpoint", "exit", "quit", "memoryview", "__build_class__", "help", "type", "object"}
)
#: namespaces that load code or configs, fetch files or compile native code.
_FORBIDDEN_PREFIXES = (
    "monai.bundle.", "monai.apps.", "torch.hub.", "torch.package.", "torch.serialization.", "torch.jit.",
    "torch.utils.cpp_extension.", "torch.utils.model_zoo.", "torch.ops.", "torch.classes.", "torch._C.",
    "torch.multiprocessing.", "numpy.lib.format.", "numpy.ctypeslib.",
)
#: last name parts of callables that run processes, execute code, parse nested configs or deserialise.
_EXECUTES_OR_LOADS = frozenset(
    {"run_cmd", "run", "system", "popen", "Popen", "spawn", "call", "check_call", "check_output", "exec", "eval",
     "compile", "import_module", "load", "loads", "load_library", "read_pickle", "unpickle", "instantiate",
     "locate", "optional_import", "download", "download_url", "fileConfig", "ConfigParser", "ConfigWorkflow",
     "ConfigComponent", "ConfigExpression", "ConfigItem", "ReferenceResolver", "get_parsed_content",
     "load_config_file", "load_config_files", "read_config", "from_pretrained", "register_forward_hook"}
)
#: arguments MONAI resolves from a dotted name and instantiates (``LoadImage(reader=...)``, ``SaveImage(writer=...)``).
_LOCATED_ARGUMENTS = ("reader", "writer")
#: keyword arguments that turn a loader into an unpickler: (name, value that is refused).
_UNSAFE_ARGUMENTS = {"weights_only": False, "allow_pickle": True}
_REF_RE = re.compile(r"@\w*(?:(?:#|::)\w*)*")
#: what MONAI accepts as a config file (``ConfigParser.suffix_match``, case-insensitive).
_CONFIG_FILE_RE = re.compile(r"\.(json|yaml|yml)$", re.IGNORECASE)
#: config keys whose value names a config file to load.
_CONFIG_FILE_KEYS = frozenset({"config_file", "meta_file", "logging_file", "args_file"})
_WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
_CODE_SUFFIXES = (".py", ".pyc", ".pyo", ".pyd", ".so", ".dll", ".dylib", ".pkl",
                  ".pickle", ".npy", ".npz", ".joblib", ".ipynb", ".egg", ".whl")
#: first bytes of serialised objects (pickle protocol 2-5, zip: torch.save/npz, numpy .npy).
_SERIALISED_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04", b"\x93NUMPY")
#: what ``configs/logging.conf`` may hold: ``logging.config.fileConfig`` evals ``args`` and imports ``class``.
_LOGGING_CLASSES = frozenset({"StreamHandler", "logging.StreamHandler", "logging.Formatter", ""})
_LOGGING_ARGS = frozenset({"()", "(sys.stdout,)", "(sys.stderr,)"})


@dataclass
class Issue:
    """One finding.

    Args:
        code: short machine-readable category (``missing-file``, ``schema``, ``hash-mismatch``, ...).
        message: full human-readable message, naming the file and the problem.
        file: the file concerned, relative to the bundle root (``None`` for bundle-level problems).
        where: location inside the file (config id or JSON path), if any.
    """

    code: str
    message: str
    file: str | None = None
    where: str | None = None


@dataclass
class ExecutableItem:
    """One executable item found in a config.

    Args:
        file: config file relative to the bundle root.
        path: config id of the item (MONAI ``#`` path, e.g. ``train#trainer#_target_``).
        kind: ``expression`` (a ``$`` string), ``target`` (a ``_target_``) or ``macro`` (``%`` from another file).
        text: the raw string.
        status: ``allowed``, ``review`` (unknown names: shown as a warning) or ``rejected`` (fails verification).
        names: the module roots / dotted names it uses.
        reason: why it was given that status.
    """

    file: str
    path: str
    kind: str
    text: str
    status: str
    names: list[str] = field(default_factory=list)
    reason: str = ""


@dataclass
class VerificationReport:
    """Result of :func:`verify_bundle`.

    Args:
        bundle: the path that was verified.
        root_name: the bundle's folder name inside the package.
        errors: failures; any error means the bundle must not be run.
        warnings: findings that need a human look but do not fail verification.
        executables: every executable item of every config file.
        files_checked: number of files whose sha256 matched the manifest.
        version: the bundle version read from metadata.json (``None`` if unreadable).
    """

    bundle: str
    root_name: str = ""
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    executables: list[ExecutableItem] = field(default_factory=list)
    files_checked: int = 0
    version: str | None = None

    @property
    def ok(self) -> bool:
        """True when there is no error."""
        return not self.errors

    def error(self, code: str, message: str, file: str | None = None, where: str | None = None) -> None:
        """Record an error.

        Args:
            code: category.
            message: message naming the file and the problem.
            file: file concerned.
            where: location inside the file.
        """
        self.errors.append(Issue(code, message, file, where))

    def warn(self, code: str, message: str, file: str | None = None, where: str | None = None) -> None:
        """Record a warning.

        Args:
            code: category.
            message: message naming the file and the problem.
            file: file concerned.
            where: location inside the file.
        """
        self.warnings.append(Issue(code, message, file, where))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for ``--json``)."""
        d = asdict(self)
        d["ok"] = self.ok
        return d

    def format(self, show_allowed: bool = True) -> str:
        """Human-readable report.

        Args:
            show_allowed: also list executable items judged ``allowed`` (all of them are always counted).
        """
        lines = [f"Bundle: {self.bundle}" + (f" (version {self.version})" if self.version else "")]
        lines.append(f"Result: {'PASSED' if self.ok else 'FAILED'} - {len(self.errors)} error(s), "
                     f"{len(self.warnings)} warning(s), {self.files_checked} file hash(es) verified")
        for title, items in (("Errors", self.errors), ("Warnings", self.warnings)):
            if items:
                lines.append(f"{title}:")
                lines.extend(f"  - [{i.code}] {i.message}" for i in items)
        counts = {s: sum(e.status == s for e in self.executables) for s in ("allowed", "review", "rejected")}
        lines.append(f"Executable items in configs: {len(self.executables)} "
                     f"({counts['allowed']} allowed, {counts['review']} to review, {counts['rejected']} rejected)")
        for e in self.executables:
            if e.status == "allowed" and not show_allowed:
                continue
            text = e.text if len(e.text) <= 120 else e.text[:117] + "..."
            lines.append(f"  {e.status.upper():8s} {e.kind:10s} {e.file}:{e.path}: {text}"
                         + (f"  ({e.reason})" if e.reason and e.status != "allowed" else ""))
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- metadata
def load_metadata_schema(schema_path: str | Path | None = None) -> dict[str, Any]:
    """Load the metadata JSON schema kept in the repository.

    Args:
        schema_path: another schema file; defaults to ``custom_components/bundle_tools/schema/metadata.schema.json``.
    """
    return json.loads(Path(schema_path or SCHEMA_PATH).read_text(encoding="utf-8"))


def validate_metadata(metadata: Mapping[str, Any], schema: Mapping[str, Any] | None = None) -> list[str]:
    """Validate a metadata dictionary; return one message per problem (empty when valid).

    Each schema message names the offending location as a JSON path (``$.network_data_format.inputs.image``)
    and the schema rule (``schema: properties/version/pattern``). Beyond the schema: the ``changelog`` must
    contain ``version``.

    Args:
        metadata: the parsed ``metadata.json``.
        schema: the schema; defaults to :func:`load_metadata_schema`.
    """
    import jsonschema

    schema = dict(schema) if schema is not None else load_metadata_schema()
    validator_cls = jsonschema.validators.validator_for(schema)
    validator = validator_cls(schema)
    problems = []
    for err in sorted(validator.iter_errors(metadata), key=lambda e: (list(e.absolute_path), e.message)):
        loc = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
        rule = "/".join(str(p) for p in err.absolute_schema_path)
        problems.append(f"{loc}: {err.message} (schema: {rule})")
    if isinstance(metadata, Mapping):
        version, changelog = metadata.get("version"), metadata.get("changelog")
        if isinstance(version, str) and isinstance(changelog, Mapping) and version not in changelog:
            problems.append(f"$.changelog: has no entry for version '{version}' (schema: changelog must contain "
                            "version)")
    return problems


# ----------------------------------------------------------------------------------------------- configs
def _walk(obj: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any, Any]]:
    """Yield (path, key, value) for every scalar leaf; key is the last dict key (or None for list items)."""
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if isinstance(v, (Mapping, list)):
                yield from _walk(v, path + (str(k),))
            else:
                yield path + (str(k),), k, v
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            if isinstance(v, (Mapping, list)):
                yield from _walk(v, path + (str(i),))
            else:
                yield path + (str(i),), None, v


def _dicts(obj: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Mapping[str, Any]]]:
    """Yield (path, dict) for every dict of a parsed config."""
    if isinstance(obj, Mapping):
        yield path, obj
        for k, v in obj.items():
            yield from _dicts(v, path + (str(k),))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _dicts(v, path + (str(i),))


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _mark_chain(node: ast.AST, seen: set[int]) -> None:
    """Add the ids of ``node`` and of every node down its attribute chain (``a.b.c`` -> ``a.b.c``, ``a.b``, ``a``)."""
    while isinstance(node, ast.Attribute):
        seen.add(id(node))
        node = node.value
    if isinstance(node, ast.Name):
        seen.add(id(node))


def _denied(full: str) -> str | None:
    """Why a full dotted name may never be used in a config (``None`` if nothing forbids it)."""
    parts = full.split(".")
    if any(p.startswith("__") and p.endswith("__") for p in parts[1:]) or (len(parts) == 1 and full.startswith("__")):
        return f"dunder name in {full}"
    if len(parts) == 1 and full in _FORBIDDEN_BUILTINS:
        return f"builtin {full}() runs, imports or reaches arbitrary code"
    if any((full + ".").startswith(p) for p in _FORBIDDEN_PREFIXES):
        return f"{full} loads code or configs, or fetches files"
    if parts[-1] in _EXECUTES_OR_LOADS:
        return f"{full} runs a process, executes code, parses a config or deserialises"
    if parts[0] in _FORBIDDEN_MODULES and not full.startswith("os.path."):
        return f"{full} uses module {parts[0]}"
    return None


def _unsafe_argument(key: str, value: Any) -> tuple[str, str] | None:
    """Verdict for one argument that turns a loader into an unpickler (``weights_only``, ``allow_pickle``)."""
    if key not in _UNSAFE_ARGUMENTS or value is None:
        return None
    if isinstance(value, bool):
        return ("rejected", f"{key}={value} unpickles arbitrary objects") if value == _UNSAFE_ARGUMENTS[key] else None
    return "review", f"{key}={value!r} is computed or not a boolean, so it cannot be audited"


def expression_names(expr: str) -> dict[str, set[str]]:
    """The names one ``$`` expression uses, by kind, as the allowlists hold them.

    Returns ``{"imports", "calls", "values", "methods"}``: modules imported; full names of callables called
    (``np`` read as ``numpy``, builtins bare); full dotted names read without being called; methods called on a
    config reference, a local variable or a call result. ``@`` references read as ``__ref__``.

    Raises:
        SyntaxError: the expression cannot be parsed.
    """
    return _parse_expression(expr)[0]


def _parse_expression(expr: str) -> tuple[dict[str, set[str]], list[tuple[str, str]]]:
    """Names used by one expression (see :func:`expression_names`) and the verdicts that do not depend on them."""
    code = expr[1:] if expr.startswith("$") else expr
    tree = ast.parse(_REF_RE.sub("__ref__", code).strip(), mode="exec")
    used: dict[str, set[str]] = {"imports": set(), "calls": set(), "values": set(), "methods": set()}
    verdicts: list[tuple[str, str]] = []
    imported: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                imported[(a.asname or a.name).split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                used["imports"].add(a.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                verdicts.append(("rejected", f"relative import from {'.' * node.level}{node.module or ''}"))
            for a in node.names:
                imported[a.asname or a.name] = f"{node.module}.{a.name}"
                used["imports"].add(f"{node.module}.{a.name}")
    bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del))}
    for node in ast.walk(tree):
        if isinstance(node, ast.arguments):
            bound.update(a.arg for a in node.posonlyargs + node.args + node.kwonlyargs)

    def full_name(dotted: str) -> str:
        root, _, rest = dotted.partition(".")
        return imported.get(root, _DEFAULT_GLOBALS.get(root, root)) + (f".{rest}" if rest else "")

    seen: set[int] = set()
    for node in ast.walk(tree):  # calls first; the names of their callee are not judged again as values
        if not isinstance(node, ast.Call):
            continue
        _mark_chain(node.func, seen)
        for k in node.keywords:
            if k.arg is None:
                verdicts.append(("review", f"{ast.unparse(node.func)}: arguments unpacked with ** cannot be audited"))
            elif k.arg in _UNSAFE_ARGUMENTS:
                value = k.value.value if isinstance(k.value, ast.Constant) else ast.unparse(k.value)
                verdict = _unsafe_argument(k.arg, value)
                if verdict:
                    verdicts.append((verdict[0], f"{ast.unparse(node.func)}(..., {verdict[1]})"))
        if any(isinstance(a, ast.Starred) for a in node.args):
            verdicts.append(("review", f"{ast.unparse(node.func)}: arguments unpacked with * cannot be audited"))
        name = _dotted(node.func)
        root = name.split(".")[0] if name else None
        if name is None or root == "__ref__" or root in bound:
            if not isinstance(node.func, ast.Attribute):
                verdicts.append(("review", f"call of {ast.unparse(node.func)} is not on the allowlist"))
            else:
                used["methods"].add(node.func.attr)
        else:
            used["calls"].add(full_name(name))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in seen:
            _mark_chain(node, seen)  # only the longest chain is judged
            dotted = _dotted(node)
            if dotted is None:
                if node.attr.startswith("__"):
                    verdicts.append(("rejected", f"dunder attribute access .{node.attr}"))
                continue
            if dotted.split(".")[0] not in bound and not dotted.startswith("__ref__."):
                used["values"].add(full_name(dotted))
            elif any(p.startswith("__") for p in dotted.split(".")[1:]):
                verdicts.append(("rejected", f"dunder attribute access in {dotted}"))
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and id(node) not in seen:
            if node.id not in bound and node.id != "__ref__":
                used["values"].add(full_name(node.id))
    return used, verdicts


def analyze_expression(expr: str) -> tuple[str, list[str], str]:
    """Statically judge one MONAI ``$`` expression without evaluating it.

    Every module imported, callable called, dotted name read and method called is judged by its full name:
    on the allowlists (:data:`ALLOWED_IMPORTS`, :data:`ALLOWED_CALLABLES`, :data:`ALLOWED_VALUES`,
    :data:`ALLOWED_METHODS`) it is ``allowed``; when it runs processes, executes code, parses a config or
    deserialises (:func:`_denied`: ``run_cmd``, ``monai.bundle.*``, ``ConfigParser``, ``*.load``, ``eval``, ``os``
    beyond the allowlist, dunder access), or passes ``weights_only=False`` / ``allow_pickle=True``, it is
    ``rejected``; anything else is left for ``review``.

    Args:
        expr: the config string, with or without the leading ``$``.

    Returns:
        ``(status, names, reason)`` with status ``allowed`` / ``review`` / ``rejected``.
    """
    try:
        used, verdicts = _parse_expression(expr)
    except SyntaxError as e:
        return "rejected", [], f"cannot be parsed, so cannot be reviewed ({e.msg})"
    for module in sorted(used["imports"]):
        if module not in ALLOWED_IMPORTS:
            reason = _denied(module)
            verdicts.append(("rejected", f"imports {module}: {reason}") if reason
                            else ("review", f"imports {module}, which is not on the allowlist"))
    for kind, allowed in (("calls", ALLOWED_CALLABLES), ("values", ALLOWED_VALUES | ALLOWED_CALLABLES)):
        for full in sorted(used[kind]):
            reason = _denied(full)
            if full in allowed:
                continue
            if reason:
                verdicts.append(("rejected", reason))
            elif kind == "values" and full in dir(builtins) and full not in _FORBIDDEN_BUILTINS:
                continue  # True, None, int, ... read as values
            else:
                what = "call of" if kind == "calls" else "use of"
                verdicts.append(("review", f"{what} {full} is not on the allowlist"))
    for meth in sorted(used["methods"]):
        if meth not in ALLOWED_METHODS:
            reason = _denied(meth) if meth in _EXECUTES_OR_LOADS or meth.startswith("__") else None
            verdicts.append(("rejected", f"method .{meth}: {reason}") if reason
                            else ("review", f"method .{meth}() is not on the allowlist"))
    names = sorted(set().union(*used.values()))
    for status in ("rejected", "review"):
        reasons = [r for s, r in verdicts if s == status]
        if reasons:
            return status, names, "; ".join(dict.fromkeys(reasons))
    return "allowed", names, ""


def classify_target(target: Any, arguments: Mapping[str, Any] | None = None) -> tuple[str, list[str], str]:
    """Judge the value of one ``_target_`` and the arguments given with it.

    Allowed when it is on :data:`ALLOWED_TARGETS` as written; rejected when its name runs processes, executes
    code, parses a config or deserialises (``monai.utils.misc.run_cmd``, ``torch.load``, ``ConfigParser``), when
    it is a bare builtin or an importable module outside the allowlist, or when an argument turns it into an
    unpickler (``weights_only: false``, ``allow_pickle: true``, for any target); ``@``/``$`` targets (computed
    callables) and every other name are left for review.

    Args:
        target: the ``_target_`` value.
        arguments: the other keys of the dict holding the ``_target_``.

    Returns:
        ``(status, names, reason)`` as for :func:`analyze_expression`.
    """
    if not isinstance(target, str):
        return "rejected", [], f"_target_ must be a string, got {type(target).__name__}"
    t = target.strip()
    for key, value in (arguments or {}).items():
        verdict = _unsafe_argument(str(key), value)
        if verdict:
            return verdict[0], [t], f"{t} with {verdict[1]}"
    if t.startswith("$"):
        status, names, reason = analyze_expression(t)
        return ("rejected", names, reason) if status == "rejected" else ("review", names, "computed _target_")
    if t.startswith("@"):
        return "review", [t], "_target_ taken from a reference cannot be audited"
    name = t.replace("::", ".")
    if name in ALLOWED_TARGETS:
        return "allowed", [name], ""
    reason = _denied(name)
    if reason:
        return "rejected", [name], reason
    if "." not in name:
        if name in dir(builtins):
            return "rejected", [name], f"bare name {name} resolves to a Python builtin"
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is not None:
            return "rejected", [name], f"bare name {name} resolves to the module {name}"
    return "review", [name], f"{name} is not on the allowlist"


def _load_config(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        return json.loads(text)
    import yaml

    return yaml.safe_load(text)


def _macro_file(value: str) -> str | None:
    """The file a ``%`` macro reads, split as ``ConfigParser.split_path_id`` does (``None``: the same config)."""
    src = value[1:].replace("#", "::")
    found = re.compile(r"(.*\.(json|yaml|yml)(?=(?:::.*)|$))", re.IGNORECASE).findall(src)
    return found[0][0] if found else None


def _judge_located(value: Any) -> tuple[str, str]:
    """Verdict for the value of a ``reader``/``writer`` argument: MONAI imports a dotted name and instantiates it,
    so a name is judged like a ``_target_``; ``None`` and non-strings (instances built elsewhere) pass."""
    if not isinstance(value, str):
        return "allowed", ""
    if value.startswith(("$", "@", "%")):
        return "review", f"computed reader/writer {value!r} cannot be audited"
    status, _, reason = classify_target(value)
    return status, reason


def scan_config_file(path: str | Path, rel_name: str | None = None) -> list[ExecutableItem]:
    """List every executable item (``$`` expressions, ``_target_`` values with their arguments, ``%`` macros,
    values of ``config_file``-like keys) of one config file.

    Args:
        path: a JSON or YAML config file (any case of the suffix).
        rel_name: name reported for the file (defaults to the path as given).

    Raises:
        ValueError: the file cannot be parsed (message names the file).
    """
    p = Path(path)
    name = rel_name or str(path)
    try:
        content = _load_config(p)
    except Exception as e:  # json/yaml errors
        raise ValueError(f"{name}: cannot be parsed ({type(e).__name__}: {e})") from e
    items: list[ExecutableItem] = []
    for keys, d in _dicts(content):
        if "_target_" in d:
            args = {k: v for k, v in d.items() if k != "_target_"}
            status, names, reason = classify_target(d["_target_"], args)
            items.append(ExecutableItem(name, "#".join(keys + ("_target_",)), "target", str(d["_target_"]),
                                        status, names, reason))
            for key in _LOCATED_ARGUMENTS:
                for v in args.get(key) if isinstance(args.get(key), list) else [args.get(key)]:
                    cid = "#".join(keys + (key,))
                    if isinstance(v, str) and re.fullmatch(r"@\w+", v):  # judged where it is defined, in any file
                        items.append(ExecutableItem(name, cid, "located", v, "allowed", [v[1:]], ""))
                    elif v is not None:
                        status, reason = _judge_located(v)
                        items.append(ExecutableItem(name, cid, "located", str(v), status, [str(v)], reason))
    for keys, key, value in _walk(content):
        cid = "#".join(keys)
        last = key.rsplit("#", 1)[-1] if isinstance(key, str) else None
        if isinstance(key, str) and "#" in key:  # an override of a nested id ("train#trainer#_target_": ...)
            if last == "_target_":
                status, names, reason = classify_target(value)
                items.append(ExecutableItem(name, cid, "target", str(value), status, names, reason))
                continue
            verdict = _unsafe_argument(last, value)
            if verdict:
                items.append(ExecutableItem(name, cid, "argument", f"{key}: {value!r}", verdict[0], [last],
                                            f"{key} with {verdict[1]}"))
        if key == "_target_" or not isinstance(value, str):
            continue
        if value.startswith("$"):
            status, names, reason = analyze_expression(value)
            items.append(ExecutableItem(name, cid, "expression", value, status, names, reason))
        elif value.startswith("%"):
            src = _macro_file(value)
            items.append(ExecutableItem(name, cid, "macro", value, "allowed", [src] if src else [], ""))
        elif key in _CONFIG_FILE_KEYS:
            items.append(ExecutableItem(name, cid, "config_file", value, "allowed", [value], ""))
    return items


def _check_reachable(item: ExecutableItem, root: Path, scanned: set[str]) -> None:
    """Reject a macro or ``config_file`` value naming a file the verifier did not scan (outside the bundle, or
    missing). Paths are read from the bundle folder, where the documented commands run."""
    if item.kind not in ("macro", "config_file") or not item.names:
        return
    rel = item.names[0]
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or "://" in rel or "\\" in rel:
        item.status, item.reason = "rejected", f"reads {rel}, outside the bundle: it cannot be scanned"
    elif p.as_posix() not in scanned:
        item.status, item.reason = "rejected", f"reads {rel}, which is not a config file of the bundle"


def _check_logging_conf(path: Path, rel: str, report: VerificationReport) -> None:
    """``logging.config.fileConfig`` (run by ``monai.bundle run`` on ``configs/logging.conf``) evals each
    handler's ``args`` and imports its ``class``: only a stream handler to stdout/stderr passes."""
    cp = configparser.ConfigParser(interpolation=None)
    try:
        cp.read_string(path.read_text(encoding="utf-8"))
    except (configparser.Error, UnicodeDecodeError) as e:
        report.error("config", f"{rel}: cannot be parsed ({type(e).__name__}: {e})", file=rel)
        return
    for section in cp.sections():
        for key in ("class", "args", "kwargs"):
            if key not in cp[section]:
                continue
            value = cp[section][key].strip()
            ok = value in _LOGGING_CLASSES if key == "class" else key == "args" and value in _LOGGING_ARGS
            if not ok:
                report.error("unsafe-expression", f"{rel}: [{section}] {key}={value!r}: logging.config.fileConfig "
                                                  "evaluates or imports it (only StreamHandler to stdout/stderr "
                                                  "passes)", file=rel, where=f"{section}#{key}")


# ----------------------------------------------------------------------------------------------- bundle
def _safe_member(name: str) -> bool:
    p = PurePosixPath(name)
    return not (p.is_absolute() or ".." in p.parts or "\\" in name or (len(name) > 1 and name[1] == ":"))


def _extract_zip(zip_path: Path, dest: Path, report: VerificationReport, max_total_bytes: int) -> Path | None:
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as e:
        report.error("bad-archive", f"{zip_path.name}: not a readable zip archive ({e})")
        return None
    with zf:
        total = 0
        for info in zf.infolist():
            if not _safe_member(info.filename):
                report.error("unsafe-path",
                             f"{zip_path.name}: archive member {info.filename!r} escapes the bundle folder",
                             file=info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                report.error("symlink", f"{zip_path.name}: archive member {info.filename!r} is a symbolic link",
                             file=info.filename)
            total += info.file_size
        if total > max_total_bytes:
            report.error("too-large", f"{zip_path.name}: uncompressed size {total} B exceeds {max_total_bytes} B")
        if report.errors:
            return None
        zf.extractall(dest)
    entries = [p for p in dest.iterdir()]
    if (dest / MANIFEST_NAME).exists() or (dest / "configs").is_dir():
        return dest
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    report.error("layout", f"{zip_path.name}: expected one top-level bundle folder, found "
                           f"{sorted(e.name for e in entries)}")
    return None


def _check_required(root: Path, report: VerificationReport) -> None:
    for rel in ("configs/metadata.json", "docs/README.md", "LICENSE"):
        if not (root / rel).is_file():
            report.error("missing-file", f"missing required file {rel}", file=rel)
    configs = [f"configs/{n}{s}" for n in ("inference", "train") for s in (".json", ".yaml", ".yml")]
    if not any((root / c).is_file() for c in configs):
        report.error("missing-file", "missing required file: configs/inference.json or configs/train.json "
                                     "(.json/.yaml/.yml)", file="configs/inference.json")


def _check_metadata(root: Path, report: VerificationReport, schema: Mapping[str, Any]) -> dict[str, Any] | None:
    rel = "configs/metadata.json"
    p = root / rel
    if not p.is_file():
        return None
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        report.error("metadata", f"{rel}: invalid JSON ({e})", file=rel)
        return None
    for problem in validate_metadata(meta, schema):
        report.error("schema", f"{rel}: {problem}", file=rel, where=problem.split(":", 1)[0])
    if isinstance(meta, dict):
        report.version = meta.get("version") if isinstance(meta.get("version"), str) else None
        for fmt, rec in ((meta.get("exported_models") or {}).items()
                         if isinstance(meta.get("exported_models"), dict) else []):
            f = rec.get("file") if isinstance(rec, dict) else None
            if isinstance(f, str) and not (root / f).is_file():
                report.warn("exported-missing", f"{rel}: exported_models.{fmt} names {f}, which is not in the bundle",
                            file=rel, where=f"$.exported_models.{fmt}.file")
    return meta if isinstance(meta, dict) else None


def _list_files(root: Path) -> list[str]:
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file() or p.is_symlink():
            out.append(p.relative_to(root).as_posix())
    return out


def _check_manifest(root: Path, report: VerificationReport, require: bool, meta: Mapping[str, Any] | None) -> None:
    mpath = root / MANIFEST_NAME
    if not mpath.is_file():
        (report.error if require else report.warn)(
            "manifest", f"missing {MANIFEST_NAME}: file hashes cannot be verified", file=MANIFEST_NAME)
        return
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        entries = manifest["files"]
        if not isinstance(entries, list):
            raise TypeError("'files' must be a list")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        report.error("manifest", f"{MANIFEST_NAME}: unreadable manifest ({type(e).__name__}: {e})", file=MANIFEST_NAME)
        return
    if manifest.get("hash_algorithm", "sha256") != "sha256":
        report.error("manifest", f"{MANIFEST_NAME}: unsupported hash_algorithm {manifest.get('hash_algorithm')!r}",
                     file=MANIFEST_NAME)
        return
    if meta is not None and manifest.get("version") != meta.get("version"):
        report.error("manifest", f"{MANIFEST_NAME}: version {manifest.get('version')!r} differs from "
                                 f"configs/metadata.json version {meta.get('version')!r}", file=MANIFEST_NAME)
    listed: set[str] = set()
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not isinstance(e.get("path"), str) or not isinstance(e.get("sha256"), str):
            report.error("manifest", f"{MANIFEST_NAME}: entry {i} needs string 'path' and 'sha256'", file=MANIFEST_NAME)
            continue
        rel = e["path"]
        if not _safe_member(rel):
            report.error("unsafe-path", f"{MANIFEST_NAME}: path {rel!r} escapes the bundle folder", file=rel)
            continue
        listed.add(rel)
        p = root / rel
        if not p.is_file():
            report.error("missing-file", f"{rel}: listed in {MANIFEST_NAME} but missing", file=rel)
            continue
        size = p.stat().st_size
        if "size" in e and e["size"] != size:
            report.error("hash-mismatch",
                         f"{rel}: size {size} B differs from manifest ({e['size']} B): file was modified",
                         file=rel)
            continue
        digest = sha256_file(p)
        if digest != e["sha256"].lower():
            report.error("hash-mismatch", f"{rel}: sha256 {digest[:12]}... differs from manifest "
                                          f"{e['sha256'][:12]}...: file was modified", file=rel)
            continue
        report.files_checked += 1
    for rel in _list_files(root):
        if rel != MANIFEST_NAME and rel not in listed:
            report.error("unlisted-file", f"{rel}: present in the bundle but not listed in {MANIFEST_NAME}", file=rel)


def _check_weights(root: Path, report: VerificationReport) -> None:
    import pickle

    import torch

    models = root / "models"
    if not models.is_dir():
        report.warn("weights", "no models/ folder: the bundle ships no weights")
        return
    for p in sorted(models.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if not p.is_file() or p.suffix not in _WEIGHT_SUFFIXES:
            continue
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, AttributeError, TypeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            report.error("weights", f"{rel}: cannot be loaded with torch.load(weights_only=True): {first}", file=rel)
            continue
        if p.name == "model.pt":
            if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
                report.error("weights", f"{rel}: expected one network's state_dict (a mapping of names to tensors), "
                                        f"got {type(obj).__name__}", file=rel)


def _installed_package(name: str) -> bool:
    """Whether ``name`` is an importable package or module outside namespace packages (nothing is imported)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    return spec is not None and spec.origin not in (None, "namespace")


def _check_code_files(root: Path, report: VerificationReport, accept_review: bool) -> None:
    """Code files (``.py``, packages, compiled modules, notebooks) and serialised objects outside ``models/`` fail
    unless ``accept_review``: verification never reads them, and ``python -m monai.bundle run`` started in the
    bundle folder imports from that folder first. A folder named like an installed package always fails."""
    add = report.warn if accept_review else report.error
    for rel in _list_files(root):
        p = root / rel
        if rel.lower().endswith(_CODE_SUFFIXES):
            top = rel.split("/")[0]
            if (root / top / "__init__.py").is_file() and _installed_package(top):  # never acceptable
                report.error("code-file", f"{rel}: the package {top}/ in the bundle would shadow the installed "
                                          f"package {top!r} (Python imports from the working folder first); "
                                          "remove it", file=rel)
                continue
            add("code-file", f"{rel}: code or pickle file in the bundle (never checked by verification; Python "
                             "imports from the working folder first); remove it, or read it, pass --accept-review "
                             "and run the bundle from outside its folder", file=rel)
        elif not rel.startswith("models/") and p.is_file() and not p.is_symlink():
            with p.open("rb") as fh:
                magic = fh.read(6)
            if magic.startswith(_SERIALISED_MAGIC):
                add("code-file", f"{rel}: holds a serialised object (pickle, zip or numpy data) whatever its name; "
                                 "only models/ may hold weights", file=rel)


def verify_bundle(
    path: str | Path,
    require_manifest: bool = True,
    strict: bool = False,
    check_weights: bool = True,
    schema_path: str | Path | None = None,
    max_total_bytes: int = 64 * 1024**3,
    accept_review: bool = False,
) -> VerificationReport:
    """Verify a received bundle (folder or zip) offline, without importing or running anything from it.

    Args:
        path: the bundle folder (holding ``configs/``) or a package (folder or ``.zip``) made by
            :func:`~custom_components.bundle_tools.package.package_bundle`.
        require_manifest: a missing ``manifest.json`` is an error (default) rather than a warning; pass ``False``
            to check a bundle folder of your own that was never packaged.
        strict: kept for older command lines; review items fail anyway unless ``accept_review``.
        check_weights: load every ``models/*.pt|pth|ckpt|bin`` with ``torch.load(weights_only=True)``.
        schema_path: another metadata schema; defaults to the one kept in this repository.
        max_total_bytes: refuse zip archives that would extract to more than this.
        accept_review: items to review (names not on the allowlists) and code files are warnings, not errors,
            once a person has read them. Rejected items fail regardless.

    Returns:
        a :class:`VerificationReport`; ``report.ok`` is False when anything failed.
    """
    del strict
    src = Path(path)
    report = VerificationReport(bundle=str(path))
    if not src.exists():
        report.error("missing-file", f"{path}: no such file or folder")
        return report
    schema = load_metadata_schema(schema_path)
    with tempfile.TemporaryDirectory(prefix="verify_bundle_") as tmp:
        if src.is_file():
            if not zipfile.is_zipfile(src):
                report.error("bad-archive", f"{src.name}: neither a bundle folder nor a zip archive")
                return report
            root = _extract_zip(src, Path(tmp), report, max_total_bytes)
            if root is None:
                return report
        else:
            root = src
            if not (root / "configs").is_dir() and not (root / MANIFEST_NAME).is_file():
                subs = [d for d in root.iterdir() if d.is_dir()]
                if len(subs) == 1:
                    root = subs[0]
        report.root_name = root.name
        for link in (p for p in root.rglob("*") if p.is_symlink()):
            rel = link.relative_to(root).as_posix()
            report.error("symlink", f"{rel}: symbolic links are not allowed in a bundle", file=rel)
        _check_required(root, report)
        meta = _check_metadata(root, report, schema)
        _check_manifest(root, report, require_manifest, meta)
        if check_weights:
            _check_weights(root, report)
        _check_code_files(root, report, accept_review)
        files = [rel for rel in _list_files(root) if (root / rel).is_file() and not (root / rel).is_symlink()]
        scanned = {rel for rel in files if _CONFIG_FILE_RE.search(rel)}  # every file MONAI could read as a config
        per_file: dict[str, list[ExecutableItem]] = {}
        for rel in sorted(scanned):
            try:
                per_file[rel] = scan_config_file(root / rel, rel)
            except ValueError as e:
                report.error("config", str(e), file=rel)
        # a reader/writer given as @id: the id's value in every config (stacked files may override it)
        located = {it.names[0] for items in per_file.values() for it in items if it.kind == "located" and it.names
                   and it.text.startswith("@")}
        for rel, items in per_file.items():
            content = _load_config(root / rel) if located else None
            for key in sorted(located & set(content)) if isinstance(content, dict) else []:
                status, reason = _judge_located(content[key])
                items.append(ExecutableItem(rel, key, "located", str(content[key]), status, [key], reason))
        for rel, items in per_file.items():
            report.executables.extend(items)
            for it in items:
                _check_reachable(it, root, scanned)
                msg = f"{rel}: {it.kind} at {it.path}: {it.text!r}: {it.reason}"
                if it.status == "rejected":
                    code = "unexpected-target" if it.kind == "target" else "unsafe-expression"
                    report.error(code, msg, file=rel, where=it.path)
                elif it.status == "review":
                    (report.warn if accept_review else report.error)("review", msg, file=rel, where=it.path)
        for rel in files:
            if rel.startswith("configs/") and rel.lower().endswith((".conf", ".ini", ".cfg")):
                _check_logging_conf(root / rel, rel, report)
    return report
