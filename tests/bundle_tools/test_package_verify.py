"""Package -> verify round trip and every failure the verifier must name."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from custom_components.bundle_tools import (
    BundlePackageError,
    analyze_expression,
    classify_target,
    package_bundle,
    validate_metadata,
    verify_bundle,
)
from custom_components.bundle_tools.verify import (
    ALLOWED_CALLABLES,
    ALLOWED_IMPORTS,
    ALLOWED_METHODS,
    ALLOWED_TARGETS,
    ALLOWED_VALUES,
    expression_names,
)

REPO = Path(__file__).resolve().parents[2]


def _messages(report) -> str:
    return "\n".join(i.message for i in report.errors)


@pytest.mark.parametrize("as_zip", [True, False])
def test_package_then_verify_passes(tiny_bundle, tmp_path, as_zip):
    b = tiny_bundle()
    (b / "models" / "train_state.pt").write_bytes(b"resumable state, not shipped")
    out = package_bundle(b, tmp_path / ("pkg.zip" if as_zip else "pkg"))
    report = verify_bundle(out)
    assert report.ok, report.format()
    assert report.version == "0.2.0"
    assert report.files_checked == 5  # inference.json, metadata.json, README.md, LICENSE, model.pt
    if as_zip:
        names = zipfile.ZipFile(out).namelist()
        assert "tiny/manifest.json" in names and "tiny/models/train_state.pt" not in names
        manifest = json.loads(zipfile.ZipFile(out).read("tiny/manifest.json"))
    else:
        assert not (out / "models" / "train_state.pt").exists()
        manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["version"] == "0.2.0" and "0.2.0" in manifest["changelog"]
    entry = {e["path"]: e for e in manifest["files"]}["models/model.pt"]
    assert entry["size"] == (b / "models" / "model.pt").stat().st_size and len(entry["sha256"]) == 64
    # every expression and _target_ is reported, none fails; `import os` passes (each os.* use is judged)
    kinds = {(e.kind, e.path) for e in report.executables}
    assert ("target", "network_def#_target_") in kinds and ("expression", "initialize#0") in kinds
    assert any(e.status == "allowed" and e.text == "$import os" for e in report.executables)


@pytest.mark.parametrize("bundle", ["cotrain", "teacher_pretrain", "supervised", "pseudolabel"])
def test_repository_bundles_pass_with_nothing_to_review(bundle):
    """Every bundle passes the verifier, and every callable its expressions use is on the allowlist (a new one
    shows up here, to be reviewed and added, rather than passing unseen)."""
    report = verify_bundle(Path(__file__).resolve().parents[2] / "bundles" / bundle, require_manifest=False,
                           check_weights=False)
    assert report.ok, report.format()
    assert [e.text for e in report.executables if e.status != "allowed"] == []


def test_no_models_package_and_refusals(tiny_bundle, tmp_path):
    b = tiny_bundle()
    out = package_bundle(b, tmp_path / "cfg_only", include_models=False)
    assert not (out / "models").exists()
    report = verify_bundle(out)
    assert report.ok and any(w.code == "weights" for w in report.warnings)
    with pytest.raises(BundlePackageError, match="already exists"):
        package_bundle(b, tmp_path / "cfg_only")
    with pytest.raises(BundlePackageError, match="outside the bundle folder"):
        package_bundle(b, b / "models" / "x.zip")
    with pytest.raises(BundlePackageError, match="configs/metadata.json not found"):
        package_bundle(tmp_path / "cfg_only", tmp_path / "again.zip")


@pytest.mark.parametrize("rel", ["configs/inference.json", "configs/metadata.json", "docs/README.md", "LICENSE",
                                 "models/model.pt"])
def test_one_changed_byte_fails_naming_the_file(tiny_bundle, tmp_path, rel):
    out = package_bundle(tiny_bundle(), tmp_path / "pkg")
    p = out / rel
    data = bytearray(p.read_bytes())
    i = len(data) // 2
    data[i] = (data[i] + 1) % 256  # same size, one byte different
    p.write_bytes(bytes(data))
    report = verify_bundle(out)
    assert not report.ok
    mism = [e for e in report.errors if e.code == "hash-mismatch"]
    assert [e.file for e in mism] == [rel]
    assert rel in mism[0].message and "modified" in mism[0].message


def test_tampered_zip_member_and_unlisted_file(tiny_bundle, tmp_path):
    out = package_bundle(tiny_bundle(), tmp_path / "pkg.zip")
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(out) as src, zipfile.ZipFile(tampered, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "tiny/docs/README.md":
                data = data.replace(b"Overview", b"Overviex")
            dst.writestr(info, data)
        dst.writestr("tiny/configs/extra.json", "{}")
    msgs = _messages(verify_bundle(tampered))
    assert "docs/README.md: sha256" in msgs
    assert "configs/extra.json: present in the bundle but not listed in manifest.json" in msgs


def test_unexpected_target_fails_naming_file_and_path(tiny_bundle, tmp_path):
    b = tiny_bundle()
    cfg = json.loads((b / "configs" / "inference.json").read_text())
    cfg["handlers"] = [{"_target_": "os.system", "command": "echo owned"}]
    (b / "configs" / "inference.json").write_text(json.dumps(cfg))
    report = verify_bundle(package_bundle(b, tmp_path / "pkg.zip"))  # hashes fine: the sender put it there
    bad = [e for e in report.errors if e.code == "unexpected-target"]
    assert len(bad) == 1 and bad[0].file == "configs/inference.json" and bad[0].where == "handlers#0#_target_"
    assert "configs/inference.json: target at handlers#0#_target_: 'os.system'" in bad[0].message
    assert "FAILED" in report.format()


def test_unsafe_expression_fails(tiny_bundle):
    b = tiny_bundle()
    cfg = json.loads((b / "configs" / "inference.json").read_text())
    cfg["run"] = ["$__import__('subprocess').call(['ls'])"]
    (b / "configs" / "inference.json").write_text(json.dumps(cfg))
    report = verify_bundle(b, require_manifest=False)
    bad = [e for e in report.errors if e.code == "unsafe-expression"]
    assert len(bad) == 1 and bad[0].where == "run#0" and "__import__" in bad[0].message


@pytest.mark.parametrize("expr,status", [
    ("$@network_def.to(@device)", "allowed"),
    ("$torch.device('cuda' if torch.cuda.is_available() else 'cpu')", "allowed"),
    ("$[x * 2 for x in range(3)]", "allowed"),
    ("$import glob", "allowed"),
    ("$import os", "allowed"),
    ("$os.makedirs(@ckpt_dir, exist_ok=True)", "allowed"),
    ("$pathlib.Path(@ckpt_dir).mkdir(parents=True, exist_ok=True)", "allowed"),
    ("$os.environ['LOCAL_RANK']", "allowed"),
    ("$custom_components.networks.check_weights(@network, @ckpt_path)", "allowed"),
    # harmless, but no bundle uses them: not on the allowlist, so a person reads them (--accept-review)
    ("$os.path.join(@bundle_root, 'models')", "review"),
    ("$np.linspace(0, 1, 5)", "review"),
    ("$pathlib.Path(@p).write_text('x')", "review"),
    ("$torch.zeros(3)", "review"),
    ("$@network.state_dict()", "review"),
    ("$some_unknown_module.f()", "review"),
    ("$monai.transforms.Lambda(func=@f)", "review"),
    ("$custom_components.experiments.runner.main()", "review"),  # no whole namespace is allowed
    ("$[m for m in [monai.utils]][0].set_determinism(0)", "review"),
    ("$torch.load(@p, weights_only=@w)", "rejected"),
    # runs a process, executes code, parses a config or deserialises: rejected whatever the review says
    ("$monai.utils.run_cmd(['touch', 'owned'])", "rejected"),
    ("$monai.utils.misc.run_cmd", "rejected"),
    ("$[m for m in [monai.utils]][0].run_cmd(['ls'])", "rejected"),
    ("$monai.bundle.run(config_file='configs/extra.json')", "rejected"),
    ("$monai.bundle", "rejected"),
    ("$monai.bundle.ConfigParser({'x': 1}).get_parsed_content('x')", "rejected"),
    ("$torch.serialization.load(@p, weights_only=False)", "rejected"),
    ("$torch.load(@p, weights_only=True)", "rejected"),
    ("$numpy.load(@p, **{'allow_pickle': True})", "rejected"),
    ("$torch.load(@p, **{'weights_only': False})", "rejected"),
    ("$os.remove(@p)", "rejected"),
    ("$requests.get('http://x')", "rejected"),
    ("$os.system('ls')", "rejected"),
    ("$import subprocess", "rejected"),
    ("$eval('1+1')", "rejected"),
    ("$open('/etc/passwd').read()", "rejected"),
    ("$torch.load(@p, weights_only=False)", "rejected"),
    ("$torch.hub.load('a/b', 'c')", "rejected"),
    ("$().__class__.__bases__[0].__subclasses__()", "rejected"),
    ("$np.load(@p, allow_pickle=True)", "rejected"),
    ("$@x.__globals__", "rejected"),
    ("$print(1 +", "rejected"),
])
def test_expression_judgement(expr, status):
    assert analyze_expression(expr)[0] == status, analyze_expression(expr)


@pytest.mark.parametrize("target,args,status", [
    ("UNet", {}, "allowed"), ("torch.optim.Adam", {}, "allowed"),
    ("custom_components.networks.MaskPathwaySegmenter", {}, "allowed"),
    ("LoadImaged", {"keys": "image"}, "allowed"),
    # not as the bundles write them: a person reads them
    ("monai.networks.nets.UNet", {}, "review"), ("scipy.ndimage.label", {}, "review"),
    ("ignite.metrics.Accuracy", {}, "review"), ("@network_def", {}, "review"),
    ("LoadImaged", {"allow_pickle": "$True"}, "review"),
    # executes, parses or deserialises, or an argument makes it unpickle
    ("monai.utils.misc.run_cmd", {}, "rejected"), ("monai.utils.run_cmd", {}, "rejected"),
    ("ConfigParser", {}, "rejected"), ("monai.bundle.ConfigParser", {}, "rejected"),
    ("monai.bundle.ConfigWorkflow", {}, "rejected"), ("torch.load", {}, "rejected"),
    ("torch.load", {"weights_only": False}, "rejected"), ("numpy.load", {"allow_pickle": True}, "rejected"),
    ("LoadImaged", {"reader": "NumpyReader", "allow_pickle": True}, "rejected"),
    ("os.system", {}, "rejected"), ("subprocess.Popen", {}, "rejected"), ("eval", {}, "rejected"),
    ("os", {}, "rejected"), ("torch.hub.load", {}, "rejected"), ("builtins.exec", {}, "rejected"),
    ("$os.system", {}, "rejected"), (3, {}, "rejected"),
])
def test_target_judgement(target, args, status):
    assert classify_target(target, args)[0] == status, classify_target(target, args)


def test_allowlists_are_exactly_what_the_bundles_use():
    """The allowlists are derived from bundles/*/configs: every name a bundle uses is on them (else the bundle
    would fail), and nothing else is (a callable no bundle uses is not allowed)."""
    used = {k: set() for k in ("imports", "calls", "values", "methods")}
    targets = set()
    for p in sorted((REPO / "bundles").rglob("*")):
        if not p.is_file() or p.suffix.lower() not in (".json", ".yaml", ".yml"):
            continue
        cfg = json.loads(p.read_text())
        stack = [cfg]
        while stack:
            obj = stack.pop()
            items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
            for k, v in items:
                if k == "_target_" or (isinstance(k, str) and k.endswith("#_target_")):
                    targets.add(v)
                elif k in ("reader", "writer") and isinstance(v, str) and isinstance(obj, dict) and "_target_" in obj:
                    targets.add(cfg.get(v[1:]) if v.startswith("@") else v)
                elif isinstance(v, str) and v.startswith("$"):
                    for kind, names in expression_names(v).items():
                        used[kind] |= names
                else:
                    stack.append(v)
    assert targets == set(ALLOWED_TARGETS)
    assert used == {"imports": set(ALLOWED_IMPORTS), "calls": set(ALLOWED_CALLABLES),
                    "values": set(ALLOWED_VALUES), "methods": set(ALLOWED_METHODS)}
    assert not any(n.endswith(".") or n in ("monai", "torch", "custom_components") for n in ALLOWED_CALLABLES)


# ------------------------------------------------------------------------- the payloads of issue 28 (part 4)
RUN_CMD = "$monai.utils.run_cmd(['touch', 'owned'])"
PICKLE_BYTES = b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01."  # pickle.dumps(1)


def _add_to_inference(bundle: Path, **items) -> None:
    p = bundle / "configs" / "inference.json"
    cfg = json.loads(p.read_text())
    for k, v in items.items():
        if k == "initialize":
            cfg["initialize"] = [*cfg.get("initialize", []), v]
        else:
            cfg[k] = v
    p.write_text(json.dumps(cfg, indent=4))


def _write(bundle: Path, rel: str, data) -> None:
    (bundle / rel).parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        (bundle / rel).write_bytes(data)
    else:
        (bundle / rel).write_text(data if isinstance(data, str) else json.dumps(data))


PAYLOADS = {
    "run_cmd_expression": (lambda b: _add_to_inference(b, initialize=RUN_CMD),
                           "configs/inference.json", RUN_CMD),
    "run_cmd_target": (lambda b: _add_to_inference(
        b, payload={"_target_": "monai.utils.misc.run_cmd", "cmd_list": ["touch", "owned"]}),
        "configs/inference.json", "monai.utils.misc.run_cmd"),
    "torch_load_target": (lambda b: (_write(b, "docs/figure.png", PICKLE_BYTES), _add_to_inference(
        b, payload={"_target_": "torch.load", "f": "docs/figure.png", "weights_only": False})),
        "configs/inference.json", "weights_only=False"),
    "numpy_load_target": (lambda b: (_write(b, "docs/figure.png", PICKLE_BYTES), _add_to_inference(
        b, payload={"_target_": "numpy.load", "file": "docs/figure.png", "allow_pickle": True})),
        "configs/inference.json", "allow_pickle=True"),
    "macro_to_docs_json": (lambda b: (_write(b, "docs/notes.json", {"payload": RUN_CMD}),
                                      _add_to_inference(b, payload="%docs/notes.json::payload")),
                           "docs/notes.json", RUN_CMD),
    "upper_case_json": (lambda b: _write(b, "configs/extra.JSON", {"initialize": [RUN_CMD]}),
                        "configs/extra.JSON", RUN_CMD),
    "bundle_run_other_file": (lambda b: (_write(b, "configs/extra.JSON", {"x": 1}), _add_to_inference(
        b, initialize="$monai.bundle.run(config_file='configs/extra.JSON')")),
        "configs/inference.json", "monai.bundle.run(config_file='configs/extra.JSON')"),
    "serialization_load": (lambda b: (_write(b, "docs/figure.png", PICKLE_BYTES), _add_to_inference(
        b, initialize="$torch.serialization.load('docs/figure.png', weights_only=False)")),
        "configs/inference.json", "torch.serialization.load('docs/figure.png', weights_only=False)"),
    "nested_config_parser": (lambda b: _add_to_inference(
        b, payload="$monai.bundle.ConfigParser({'x': \"$monai.utils.run_cmd(['ls'])\"}).get_parsed_content('x')"),
        "configs/inference.json", "monai.bundle.ConfigParser("),
    "nested_config_parser_target": (lambda b: _add_to_inference(
        b, payload={"_target_": "ConfigParser", "config": {"x": 1}}), "configs/inference.json", "ConfigParser"),
    "custom_components_package": (lambda b: _write(b, "custom_components/__init__.py", "import os\n"),
                                  "custom_components/__init__.py", "shadow the installed package 'custom_components'"),
    "macro_outside_bundle": (lambda b: _add_to_inference(b, payload="%/tmp/elsewhere.json::payload"),
                             "configs/inference.json", "%/tmp/elsewhere.json::payload"),
    "config_file_outside_bundle": (lambda b: _add_to_inference(b, config_file="../other/train.json"),
                                   "configs/inference.json", "../other/train.json"),
    "writer_by_name": (lambda b: _add_to_inference(b, seg_writer="monai.utils.misc.run_cmd"),
                       "configs/inference.json", "seg_writer: 'monai.utils.misc.run_cmd'"),
    "nested_target_override": (lambda b: _add_to_inference(b, **{"network_def#_target_": "monai.utils.misc.run_cmd"}),
                               "configs/inference.json", "monai.utils.misc.run_cmd"),
    "nested_argument_override": (lambda b: _add_to_inference(b, **{"payload": {"_target_": "torch.load", "f": "x.pt"},
                                                                  "payload#weights_only": False}),
                                 "configs/inference.json", "weights_only"),
    "logging_conf_eval": (lambda b: _write(b, "configs/logging.conf", (
        REPO / "bundles/cotrain/configs/logging.conf").read_text().replace("args=()", "args=(__import__('os'),)")),
        "configs/logging.conf", "__import__('os')"),
}


@pytest.fixture
def cotrain_copy(tmp_path):
    """The repository's cotrain bundle (configs, docs, LICENSE) as a received folder, without weights."""
    b = tmp_path / "cotrain"
    shutil.copytree(REPO / "bundles" / "cotrain", b)
    return b


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_payload_fails_naming_file_and_expression(cotrain_copy, tmp_path, payload):
    inject, rel, needle = PAYLOADS[payload]
    assert verify_bundle(cotrain_copy, require_manifest=False, check_weights=False).ok
    inject(cotrain_copy)
    reports = [verify_bundle(cotrain_copy, require_manifest=False, check_weights=False, accept_review=accept)
               for accept in (False, True)]  # the received folder, even after a person's review
    pkg = package_bundle(cotrain_copy, tmp_path / "pkg.zip", include_models=False)  # the hashes are fine
    if f"cotrain/{rel}" in zipfile.ZipFile(pkg).namelist():
        reports.append(verify_bundle(pkg))
    for report in reports:
        assert not report.ok
        named = [e for e in report.errors if e.file == rel and needle in e.message]
        assert named, report.format(show_allowed=False)
        assert "Result: FAILED" in report.format()


def test_review_items_and_code_files_fail_unless_accepted(cotrain_copy):
    _add_to_inference(cotrain_copy, initialize="$os.path.join(@bundle_root, 'models')")
    _write(cotrain_copy, "docs/helper.py", "print('hi')\n")
    report = verify_bundle(cotrain_copy, require_manifest=False, check_weights=False)
    assert {e.code for e in report.errors} == {"review", "code-file"}
    assert any("os.path.join is not on the allowlist" in e.message for e in report.errors)
    accepted = verify_bundle(cotrain_copy, require_manifest=False, check_weights=False, accept_review=True)
    assert accepted.ok and {w.code for w in accepted.warnings} >= {"review", "code-file"}


def test_missing_license_fails(tiny_bundle, tmp_path):
    b = tiny_bundle()
    (b / "LICENSE").unlink()
    report = verify_bundle(package_bundle(b, tmp_path / "pkg"))
    assert not report.ok
    assert [e.message for e in report.errors] == ["missing required file LICENSE"]


def test_missing_configs_and_manifest(tiny_bundle):
    b = tiny_bundle()
    (b / "configs" / "inference.json").unlink()
    msgs = _messages(verify_bundle(b))
    assert "configs/inference.json or configs/train.json" in msgs
    assert "missing manifest.json" in msgs


@pytest.mark.parametrize("mutate,needle", [
    (lambda m: m.update(version="1.0"), "$.version: '1.0' does not match"),
    (lambda m: m.pop("license"), "'license' is a required property (schema: required)"),
    (lambda m: m["network_data_format"]["inputs"]["image"].update(num_channels="one"),
     "$.network_data_format.inputs.image.num_channels: 'one' is not of type 'integer' "
     "(schema: properties/network_data_format/properties/inputs/additionalProperties/properties/num_channels/type)"),
    (lambda m: m["network_data_format"]["outputs"]["pred"].pop("channel_def"),
     "$.network_data_format.outputs.pred: 'channel_def' is a required property"),
    (lambda m: m.update(version="0.3.0"), "$.changelog: has no entry for version '0.3.0'"),
])
def test_invalid_metadata_fails_with_schema_path(tiny_bundle, tmp_path, mutate, needle):
    b = tiny_bundle()
    meta = json.loads((b / "configs" / "metadata.json").read_text())
    mutate(meta)
    assert any(needle in p for p in validate_metadata(meta))
    (b / "configs" / "metadata.json").write_text(json.dumps(meta))
    report = verify_bundle(package_bundle(b, tmp_path / "pkg.zip"))
    schema_errors = [e for e in report.errors if e.code == "schema"]
    assert schema_errors and all(e.file == "configs/metadata.json" for e in schema_errors)
    assert any(needle in e.message for e in schema_errors)


def test_pickled_module_weights_fail(tiny_bundle, tmp_path):
    b = tiny_bundle()
    torch.save(torch.nn.Linear(2, 2), b / "models" / "model.pt")  # a full module: needs pickle
    report = verify_bundle(package_bundle(b, tmp_path / "pkg"))
    bad = [e for e in report.errors if e.code == "weights"]
    assert len(bad) == 1 and bad[0].file == "models/model.pt"
    assert "cannot be loaded with torch.load(weights_only=True)" in bad[0].message


def test_model_pt_must_be_a_state_dict(tiny_bundle):
    b = tiny_bundle()
    torch.save({"epoch": 3}, b / "models" / "model.pt")
    msgs = _messages(verify_bundle(b, require_manifest=False))
    assert "models/model.pt: expected one network's state_dict" in msgs


def test_zip_member_escaping_the_folder_fails(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("tiny/configs/metadata.json", "{}")
        zf.writestr("../outside.txt", "x")
    report = verify_bundle(evil)
    assert not report.ok and "'../outside.txt' escapes the bundle folder" in _messages(report)
    assert not (tmp_path.parent / "outside.txt").exists()


def test_cli_exit_codes(tiny_bundle, tmp_path):
    b = tiny_bundle()
    out = tmp_path / "pkg.zip"
    run = lambda *a: subprocess.run([sys.executable, *a], capture_output=True, text=True, cwd=REPO)  # noqa: E731
    r = run("scripts/package_bundle.py", str(b), str(out))
    assert r.returncode == 0, r.stderr
    r = run("scripts/verify_bundle.py", str(out), "--json", str(tmp_path / "report.json"))
    assert r.returncode == 0 and "Result: PASSED" in r.stdout, r.stdout + r.stderr
    assert json.loads((tmp_path / "report.json").read_text())["ok"] is True
    (b / "LICENSE").unlink()
    r = run("scripts/verify_bundle.py", str(b))
    assert r.returncode == 1 and "missing required file LICENSE" in r.stdout
    # a payload fails the command line, naming the file and the expression, even with --accept-review
    c = tmp_path / "cotrain"
    shutil.copytree(REPO / "bundles" / "cotrain", c)
    _add_to_inference(c, initialize=RUN_CMD)
    r = run("scripts/verify_bundle.py", str(c), "--no-manifest", "--skip-weights", "--accept-review", "--quiet")
    assert r.returncode == 1 and "configs/inference.json: expression at initialize#" in r.stdout, r.stdout
    assert RUN_CMD in r.stdout and "Result: FAILED" in r.stdout
