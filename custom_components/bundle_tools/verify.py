"""Offline verification of a received bundle (folder or zip) before anything in it runs.

Checks, in order: required files; ``configs/metadata.json`` against the schema kept in this repository
(``schema/metadata.schema.json``); ``manifest.json`` hashes (a changed byte or a file that the manifest does not
list fails, naming the file); weights loadable with ``torch.load(weights_only=True)``; and a report of every
executable item in the configs: each ``$`` expression (parsed with :mod:`ast`, never evaluated) and each
``_target_``. A ``_target_`` whose module lies outside the allowed roots (monai, torch, ignite, custom_components,
numpy, scipy) fails, naming the config file and the config id (MONAI ``#`` path).

Nothing in the bundle is imported, instantiated or evaluated.
"""

from __future__ import annotations

import ast
import builtins
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
    "ALLOWED_TARGET_ROOTS",
    "SCHEMA_PATH",
    "Issue",
    "ExecutableItem",
    "VerificationReport",
    "load_metadata_schema",
    "validate_metadata",
    "scan_config_file",
    "analyze_expression",
    "classify_target",
    "verify_bundle",
]

SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "metadata.schema.json"
#: module roots whose callables a ``_target_`` may name.
ALLOWED_TARGET_ROOTS: frozenset[str] = frozenset(
    {"monai", "torch", "ignite", "custom_components", "numpy", "scipy"}
)
#: names MONAI puts in every expression's globals (``np`` is numpy).
_DEFAULT_GLOBALS = {"np": "numpy"}
#: standard-library modules that read or compute but do not run processes, write arbitrary files or open sockets.
_SAFE_STDLIB = frozenset(
    {"math", "glob", "pathlib", "json", "functools", "itertools", "operator", "collections", "random", "re",
     "datetime", "copy", "logging", "string", "numbers", "fnmatch", "statistics", "typing", "warnings", "time"}
)
_SAFE_DOTTED_PREFIXES = ("os.path.", "os.sep", "os.linesep", "os.environ.get", "os.getcwd", "os.cpu_count")
#: modules whose use in a config means code execution, process control, network or low-level memory access.
_FORBIDDEN_MODULES = frozenset(
    {"os", "subprocess", "sys", "shutil", "importlib", "pickle", "marshal", "shelve", "dill", "cloudpickle",
     "socket", "urllib", "http", "requests", "ftplib", "smtplib", "ctypes", "cffi", "builtins", "pty",
     "multiprocessing", "signal", "code", "codeop", "runpy", "pdb", "tempfile", "webbrowser", "asyncio", "threading"}
)
_FORBIDDEN_BUILTINS = frozenset(
    {"eval", "exec", "compile", "__import__", "open", "getattr", "setattr", "delattr", "globals", "locals",
     "vars", "input", "breakpoint", "exit", "quit", "memoryview", "__build_class__", "help"}
)
#: callables inside the allowed roots that load pickles, fetch code or compile native code.
_FORBIDDEN_DOTTED_PREFIXES = (
    "torch.hub.", "torch.package.", "torch.utils.cpp_extension.", "torch.ops.load_library",
    "torch.classes.load_library", "torch.utils.model_zoo.", "torch.serialization._load", "numpy.lib.format.read_array",
    "monai.bundle.download", "monai.bundle.scripts.download", "monai.bundle.load", "monai.apps.utils.download_url",
    "monai.utils.module.optional_import", "monai.utils.optional_import", "monai.utils.module.instantiate",
    "monai.utils.instantiate", "monai.utils.module.locate", "torch._C.", "torch.jit.load", "numpy.ctypeslib.",
)
#: the callables the bundles' ``$`` expressions call: the audit's allowlist. A call of anything else (and a call
#: whose keyword arguments are hidden in ``**`` unpacking) is listed for review; see docs/sharing.md.
ALLOWED_CALLABLE_NAMESPACES: tuple[str, ...] = ("custom_components.", "monai.")
ALLOWED_CALLABLES: frozenset[str] = frozenset(
    {"torch.device", "torch.nn.Sequential", "torch.nn.Softmax", "torch.cuda.is_available", "torch.cuda.set_device",
     "torch.distributed.is_available",
     "torch.distributed.is_initialized", "torch.distributed.get_rank", "torch.distributed.init_process_group",
     "torch.distributed.destroy_process_group", "pathlib.Path", "glob.glob", "os.makedirs", "os.path.join",
     "os.path.exists", "os.path.isfile", "os.path.isdir", "os.path.dirname", "os.path.basename",
     "float", "int", "str", "bool", "len", "min", "max", "abs", "round", "sum", "sorted", "isinstance", "list",
     "tuple", "dict", "set", "range", "zip", "enumerate", "any", "all"}
)
#: methods the bundles call on config references, call results and comprehension variables.
ALLOWED_METHODS: frozenset[str] = frozenset(
    {"to", "parameters", "run", "attach", "get", "items", "keys", "values", "mkdir", "startswith", "endswith",
     "format", "join"}
)
#: attribute values (not calls) outside the allowed roots that expressions may read.
_SAFE_VALUES = frozenset({"os.environ"})
_REF_RE = re.compile(r"@\w*(?:(?:#|::)\w*)*")
_CONFIG_SUFFIXES = (".json", ".yaml", ".yml")
_WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
_CODE_SUFFIXES = (".py", ".pyc", ".so", ".dll", ".dylib", ".sh", ".pkl", ".pickle", ".npy", ".ipynb")


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


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _judge_dotted(name: str, imported: Mapping[str, str]) -> tuple[str, str]:
    """Status of one dotted name used in an expression: (status, reason)."""
    root, _, rest = name.partition(".")
    if root in ("__ref__", "__macro__"):
        return "allowed", ""
    full = imported.get(root, _DEFAULT_GLOBALS.get(root, root)) + (f".{rest}" if rest else "")
    full_root = full.split(".")[0]
    if any(part.startswith("__") and part.endswith("__") for part in full.split(".")[1:]):
        return "rejected", f"dunder attribute access in {name}"
    if any((full + ".").startswith(p) or full.startswith(p) for p in _FORBIDDEN_DOTTED_PREFIXES):
        return "rejected", f"{full} loads or fetches code"
    if full_root in ALLOWED_TARGET_ROOTS:
        return "allowed", ""
    if full in _SAFE_VALUES or any((full + ".").startswith(p) or full == p.rstrip(".") for p in _SAFE_DOTTED_PREFIXES):
        return "allowed", ""
    if full_root in _SAFE_STDLIB:
        return "allowed", ""
    if root in _FORBIDDEN_BUILTINS and root not in imported:
        return "rejected", f"builtin {root}() runs or imports code"
    if full_root in _FORBIDDEN_MODULES:
        return "rejected", f"{full} uses module {full_root}"
    if not rest and root in dir(builtins):
        return "allowed", ""
    return "review", f"unknown name {full}"


def _mark_chain(node: ast.AST, seen: set[int]) -> None:
    """Add the ids of ``node`` and of every node down its attribute chain (``a.b.c`` -> ``a.b.c``, ``a.b``, ``a``)."""
    while isinstance(node, ast.Attribute):
        seen.add(id(node))
        node = node.value
    if isinstance(node, ast.Name):
        seen.add(id(node))


def analyze_expression(expr: str) -> tuple[str, list[str], str]:
    """Statically judge one MONAI ``$`` expression without evaluating it.

    ``@id`` references are replaced by a placeholder; imports (``$import x``) are judged by the module imported
    (``os``, ``sys``, ``subprocess``, ... rejected; unknown modules to review); every name used is judged by its
    dotted path: allowed roots and harmless standard-library modules pass, ``os.system``, ``eval``, ``open``,
    ``__import__``, dunder attribute access, ``torch.hub``, ``torch.load(..., weights_only=False)`` and
    ``numpy.load(..., allow_pickle=True)`` are rejected, anything else is left for review.

    Args:
        expr: the config string, with or without the leading ``$``.

    Returns:
        ``(status, names, reason)`` with status ``allowed`` / ``review`` / ``rejected``.
    """
    code = expr[1:] if expr.startswith("$") else expr
    code = _REF_RE.sub("__ref__", code).strip()
    try:
        tree = ast.parse(code, mode="exec")
    except SyntaxError as e:
        return "rejected", [], f"cannot be parsed, so cannot be reviewed ({e.msg})"
    imported: dict[str, str] = {}
    names: list[str] = []
    verdicts: list[tuple[str, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                imported[(a.asname or a.name).split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                names.append(a.name)
                verdicts.append(_judge_import(a.name))
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                verdicts.append(("rejected", f"relative import from {'.' * node.level}{mod}"))
            for a in node.names:
                imported[a.asname or a.name] = f"{mod}.{a.name}"
                names.append(f"{mod}.{a.name}")
                verdicts.append(_judge_import(mod))
    bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del))}
    for node in ast.walk(tree):
        if isinstance(node, ast.arguments):
            bound.update(a.arg for a in node.posonlyargs + node.args + node.kwonlyargs)
    seen_roots: set[int] = set()
    for node in ast.walk(tree):  # calls first: judged against the allowlist, their names are not judged again
        if isinstance(node, ast.Call):
            verdicts.extend(_judge_call(node, imported, bound))
            _mark_chain(node.func, seen_roots)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in seen_roots:
            dotted = _dotted(node)
            _mark_chain(node.value, seen_roots)  # only the longest chain is judged
            if dotted is None:
                if node.attr.startswith("__") and node.attr.endswith("__"):
                    verdicts.append(("rejected", f"dunder attribute access .{node.attr}"))
                continue
            if dotted.split(".")[0] in bound:
                continue
            names.append(dotted)
            verdicts.append(_judge_dotted(dotted, imported))
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and id(node) not in seen_roots:
            if node.id in bound:
                continue
            names.append(node.id)
            verdicts.append(_judge_dotted(node.id, imported))
    for status in ("rejected", "review"):
        reasons = [r for s, r in verdicts if s == status]
        if reasons:
            return status, sorted(set(names)), "; ".join(dict.fromkeys(reasons))
    return "allowed", sorted(set(names)), ""


def _judge_import(module: str) -> tuple[str, str]:
    root = module.split(".")[0]
    if root in ALLOWED_TARGET_ROOTS or root in _SAFE_STDLIB or module == "os.path":
        return "allowed", ""
    if root == "os":  # every os.* use is judged where it is used (os.makedirs, os.path.*, os.environ pass)
        return "allowed", ""
    if root in _FORBIDDEN_MODULES:
        return "rejected", f"imports {module}"
    return "review", f"imports unknown module {module}"


def _judge_call(node: ast.Call, imported: Mapping[str, str], bound: set[str] | frozenset[str] = frozenset()
                ) -> list[tuple[str, str]]:
    """Verdicts for one call: rejected for code-running callables and unpickling loads, allowed for the allowlist
    (:data:`ALLOWED_CALLABLES`, :data:`ALLOWED_CALLABLE_NAMESPACES`, :data:`ALLOWED_METHODS`), review otherwise."""
    out: list[tuple[str, str]] = []
    hidden = [k for k in node.keywords if k.arg is None] + [a for a in node.args if isinstance(a, ast.Starred)]
    name = _dotted(node.func)
    if name is None:  # a method of a call result, a subscript, ...
        meth = node.func.attr if isinstance(node.func, ast.Attribute) else None
        if meth is None or meth not in ALLOWED_METHODS:
            out.append(("review", f"call of {ast.unparse(node.func)} is not on the allowlist"))
        elif meth.startswith("__"):
            out.append(("rejected", f"dunder attribute access .{meth}"))
        if hidden:
            out.append(("review", f"{ast.unparse(node.func)}: arguments unpacked with * or ** cannot be audited"))
        return out
    root, _, rest = name.partition(".")
    full = imported.get(root, _DEFAULT_GLOBALS.get(root, root)) + (f".{rest}" if rest else "")
    kwargs = {k.arg: k.value for k in node.keywords if k.arg}
    status, reason = _judge_dotted(name, imported)
    if status == "rejected" and not (full in ALLOWED_CALLABLES or full.startswith("os.path.")):
        return [(status, reason)]
    if full == "torch.load":
        wo = kwargs.get("weights_only")
        if isinstance(wo, ast.Constant) and wo.value is False:
            return [("rejected", "torch.load(..., weights_only=False) unpickles arbitrary objects")]
        if not (isinstance(wo, ast.Constant) and wo.value is True) or hidden:
            return [("review", "torch.load without an explicit weights_only=True")]
    if full == "numpy.load" and isinstance(kwargs.get("allow_pickle"), ast.Constant) and kwargs["allow_pickle"].value:
        return [("rejected", "numpy.load(..., allow_pickle=True) unpickles arbitrary objects")]
    if root in ("__ref__", "__macro__") or root in bound:  # a method of a config item or of a local variable
        meth = name.rsplit(".", 1)[-1]
        if "." not in name or meth not in ALLOWED_METHODS:
            out.append(("review", f"call of {name.replace('__ref__', '@ref')} is not on the allowlist"))
    elif not (full in ALLOWED_CALLABLES or full.startswith(ALLOWED_CALLABLE_NAMESPACES)):
        out.append(("review", f"call of {full} is not on the allowlist"))
    if hidden:
        out.append(("review", f"{full}: arguments unpacked with * or ** cannot be audited"))
    return out


def classify_target(target: Any) -> tuple[str, list[str], str]:
    """Judge the value of one ``_target_``.

    Dotted names must start with an allowed root (:data:`ALLOWED_TARGET_ROOTS`) and not name a code-loading
    callable; a bare name is resolved by MONAI among monai's components, and otherwise by ``pydoc.locate``, so
    bare names of builtins (``eval``) or of importable top-level modules (``os``) are rejected; ``@ref`` targets
    are allowed (the referenced item is checked where it is defined); ``$`` targets are judged as expressions.

    Args:
        target: the ``_target_`` value.

    Returns:
        ``(status, names, reason)`` as for :func:`analyze_expression`.
    """
    if not isinstance(target, str):
        return "rejected", [], f"_target_ must be a string, got {type(target).__name__}"
    t = target.strip()
    if t.startswith("$"):
        return analyze_expression(t)
    if t.startswith("@"):
        return "allowed", [t], "reference"
    name = t.replace("::", ".")
    if "." not in name:
        if name in dir(builtins):
            return "rejected", [name], f"bare name {name} resolves to a Python builtin"
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and name not in ALLOWED_TARGET_ROOTS:
            return "rejected", [name], f"bare name {name} resolves to the module {name}, outside the allowed roots"
        return "allowed", [name], "component name resolved among monai modules"
    root = name.split(".")[0]
    if root not in ALLOWED_TARGET_ROOTS:
        return "rejected", [name], f"module {root} is outside the allowed roots {sorted(ALLOWED_TARGET_ROOTS)}"
    if any(name.startswith(p) or name == p.rstrip(".") for p in _FORBIDDEN_DOTTED_PREFIXES):
        return "rejected", [name], f"{name} loads or fetches code"
    if any(part.startswith("_") for part in name.split(".")[1:]):
        return "review", [name], "private name"
    return "allowed", [name], ""


def _load_config(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return json.loads(text)
    import yaml

    return yaml.safe_load(text)


def scan_config_file(path: str | Path, rel_name: str | None = None) -> list[ExecutableItem]:
    """List every executable item (``$`` expressions, ``_target_`` values, ``%`` macros) of one config file.

    Args:
        path: a JSON or YAML config file.
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
    for keys, key, value in _walk(content):
        cid = "#".join(keys)
        if key == "_target_":
            status, names, reason = classify_target(value)
            items.append(ExecutableItem(name, cid, "target", str(value), status, names, reason))
        elif isinstance(value, str) and value.startswith("$"):
            status, names, reason = analyze_expression(value)
            items.append(ExecutableItem(name, cid, "expression", value, status, names, reason))
        elif isinstance(value, str) and value.startswith("%") and ("::" in value or ".json" in value
                                                                   or ".yaml" in value or ".yml" in value):
            src = re.split(r"::|#", value[1:], maxsplit=1)[0]
            outside = src.startswith("/") or ".." in PurePosixPath(src).parts or "://" in value
            items.append(ExecutableItem(name, cid, "macro", value, "review" if outside else "allowed", [src],
                                        "macro reads a file outside the bundle" if outside else ""))
    return items


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
    configs = [f"configs/{n}{s}" for n in ("inference", "train") for s in _CONFIG_SUFFIXES]
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


def verify_bundle(
    path: str | Path,
    require_manifest: bool = True,
    strict: bool = False,
    check_weights: bool = True,
    schema_path: str | Path | None = None,
    max_total_bytes: int = 64 * 1024**3,
) -> VerificationReport:
    """Verify a received bundle (folder or zip) offline, without importing or running anything from it.

    Args:
        path: the bundle folder (holding ``configs/``) or a package (folder or ``.zip``) made by
            :func:`~custom_components.bundle_tools.package.package_bundle`.
        require_manifest: a missing ``manifest.json`` is an error (default) rather than a warning; pass ``False``
            to check a bundle folder of your own that was never packaged.
        strict: executable items marked ``review`` (unknown names) are errors instead of warnings.
        check_weights: load every ``models/*.pt|pth|ckpt|bin`` with ``torch.load(weights_only=True)``.
        schema_path: another metadata schema; defaults to the one kept in this repository.
        max_total_bytes: refuse zip archives that would extract to more than this.

    Returns:
        a :class:`VerificationReport`; ``report.ok`` is False when anything failed.
    """
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
        for rel in _list_files(root):
            if rel.endswith(_CODE_SUFFIXES):
                report.warn("code-file", f"{rel}: code or pickle file in the bundle (never loaded by verification; "
                                         "check why it is there)", file=rel)
        configs = root / "configs"
        for p in sorted(configs.rglob("*")) if configs.is_dir() else []:
            if not (p.is_file() and p.suffix in _CONFIG_SUFFIXES):
                continue
            rel = p.relative_to(root).as_posix()
            try:
                items = scan_config_file(p, rel)
            except ValueError as e:
                report.error("config", str(e), file=rel)
                continue
            report.executables.extend(items)
            for it in items:
                msg = f"{rel}: {it.kind} at {it.path}: {it.text!r}: {it.reason}"
                if it.status == "rejected":
                    code = "unexpected-target" if it.kind == "target" else "unsafe-expression"
                    report.error(code, msg, file=rel, where=it.path)
                elif it.status == "review":
                    (report.error if strict else report.warn)("review", msg, file=rel, where=it.path)
    return report
