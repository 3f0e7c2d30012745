#!/usr/bin/env python
"""Integration check: the co-training bundle's ``inference.json`` served by a real MONAI Label server, 2D and 3D.

Run it with the MONAI Label environment's Python (``scripts/setup_monailabel_env.sh`` creates it)::

    .venv-monailabel/bin/python scripts/monailabel_integration.py            # exit 0 = passed

What it does, in a temporary folder (``--work`` to keep it):

1. builds two local bundles under ``<app>/model/``: ``cotrain_2d`` (a copy of the co-training bundle trained here
   for one short epoch on synthetic data, served as it is: training wrote its settings into its own configs) and
   ``cotrain_3d`` (the same file with the 3D profile applied: ``bundles/cotrain/configs/profile_3d.json``
   when it exists, otherwise the project's 3D conventions), each with ``configs/metadata.json`` and a
   ``models/model.pt`` (3D: a freshly initialised ``MaskPathwaySegmenter`` state dict; ``--model-pt`` gives trained
   weights for a 2D bundle built the same way instead of training one);
2. writes the MONAI Label app (:data:`APP_MAIN`: ``BundleInferTask`` per bundle, plus the 2D fixes) around them;
3. writes a studies folder with one 2D RGB PNG and one 3D NIfTI volume of sizes that are not multiples of the
   network's input size (so resizing / sliding window and restoring the input geometry are exercised);
4. starts ``monailabel start_server`` on 127.0.0.1 (a free port) offline: ``--conf zoo_source local --conf sam2 false``;
5. calls ``GET /info/`` and ``POST /infer/<model>?image=<id>&output=image`` over HTTP (urllib) and checks that
   each returned mask has the input's spatial shape and only labels in ``[0, num_classes)``;
6. stops the server (SIGTERM, then SIGKILL) whatever happened; everything is bounded by ``--timeout``.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"

#: the 3D conventions of the project's bundles, used when the co-training bundle has no profile_3d.json
DEFAULT_3D = {
    "spatial_dims": 3,
    "in_channels": 1,
    "roi_size": [32, 32, 32],
    "image_ext": ".nii.gz",
    "output_ext": ".nii.gz",
    "eval_spatial_transforms": [],
    "eval_inferer": {"_target_": "SlidingWindowInferer", "roi_size": "@roi_size", "sw_batch_size": 1, "overlap": 0.25,
                     "mode": "gaussian"},
}

#: ``main.py`` of the MONAI Label app serving the project's bundles (written by ``--write-app`` and by the test).
#: MONAI Label's own ``monaibundle`` app serves 3D bundles unchanged but returns 2D masks with a channel axis, which its
#: PNG writer cannot write; this app squeezes it for 2D bundles, writes masks
#: as uint8, and adds a ``least_confident`` strategy that follows the pseudolabel bundle's ranking.
APP_MAIN = """
import json
import logging
import os

from monai.transforms import SqueezeDimd

import monailabel
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.utils.others.generic import get_bundle_models

logger = logging.getLogger(__name__)


class ProjectBundleInferTask(BundleInferTask):
    \"\"\"A bundle's inference.json as a MONAI Label model; 2D masks lose their channel axis for the PNG writer.\"\"\"

    def post_transforms(self, data=None):
        post = list(super().post_transforms(data))
        if self.dimension == 2:
            # MONAI Label's 2D writer expects the mask without its channel axis
            post.append(SqueezeDimd(keys="pred", dim=0))
        return post

    def writer(self, data, extension=None, dtype=None):
        return super().writer(data, extension, dtype or "uint8")


class LeastConfident(Strategy):
    \"\"\"Next sample = the least confident unlabelled image of pseudolabels.json (``--conf pseudolabels <file>``).\"\"\"

    def __init__(self, path):
        super().__init__("Least confident pseudo-label first (pseudolabels.json ranking)")
        self.path = path

    def __call__(self, request, datastore):
        images = set(datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels")))
        with open(self.path) as f:
            entries = json.load(f)["pseudolabels"]
        for e in sorted(entries, key=lambda e: e["score"]):
            name = os.path.basename(e["image"])
            image_id = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else os.path.splitext(name)[0]
            if image_id in images:
                logger.info(f"LeastConfident: {image_id} (score {e['score']})")
                return {"id": image_id}
        return None


class MyApp(MONAILabelApp):
    def __init__(self, app_dir, studies, conf):
        self.models = get_bundle_models(app_dir, conf)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"diffusion-ssl-seg bundles ({monailabel.__version__})",
            description="The co-training bundle's inference.json served as MONAI Label models (2D and 3D)",
            version=monailabel.__version__,
        )

    def init_infers(self):
        infers = {}
        for name, path in self.models.items():
            task = ProjectBundleInferTask(path, self.conf)
            if task.is_valid():
                logger.info(f"+++ Adding Inferer:: {name} => {task}")
                infers[name] = task
        return infers

    def init_trainers(self):
        return {}

    def init_strategies(self):
        strategies = {"first": First(), "random": Random()}
        if self.conf.get("pseudolabels"):
            strategies["least_confident"] = LeastConfident(self.conf["pseudolabels"])
        return strategies
"""  # noqa: E501 (the generated app keeps its one-line docstring)


def write_app(app: Path, bundles: dict[str, Path]) -> Path:
    """Write the MONAI Label app folder: ``main.py`` and ``model/<name>`` links to bundle folders.

    Args:
        app: the app folder (created).
        bundles: model name -> bundle folder (linked, or used in place when already under ``app/model``).
    """
    (app / "model").mkdir(parents=True, exist_ok=True)
    (app / "main.py").write_text(APP_MAIN.lstrip())
    for name, folder in bundles.items():
        dst = app / "model" / name
        if folder.resolve() != dst.resolve():
            if dst.is_symlink() or dst.exists():
                raise FileExistsError(f"{dst} already exists: remove it or choose another model name.")
            dst.symlink_to(folder.resolve(), target_is_directory=True)
    return app


def log(msg: str) -> None:
    """Print a timestamped progress line.

    Args:
        msg: the message.
    """
    print(f"[monailabel-it {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def merged_config(bundle: Path, dims: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """The bundle's ``inference.json`` (plus its 3D profile for ``dims == 3``) with top-level overrides.

    Args:
        bundle: the bundle folder (``bundles/cotrain``).
        dims: 2 or 3.
        overrides: id -> value, applied last.
    """
    from monai.bundle import ConfigParser

    files = [bundle / "configs" / "inference.json"]
    if not files[0].is_file():
        raise FileNotFoundError(f"{files[0]} does not exist: the bundle has no inference config.")
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    if dims == 3:
        profile = bundle / "configs" / "profile_3d.json"
        prof = json.loads(profile.read_text()) if profile.is_file() else dict(DEFAULT_3D)
        for k, v in prof.items():
            if "#" in k and k.split("#")[0] not in parser.config:
                continue  # an id of the training config only
            parser[k] = v
        if "eval_inferer" not in prof and "inferer" not in prof:
            parser["eval_inferer"] = DEFAULT_3D["eval_inferer"]
    for k, v in overrides.items():
        parser[k] = v
    return copy.deepcopy(parser.config)


def metadata_for(bundle: Path, cfg: dict[str, Any], dims: int) -> dict[str, Any]:
    """``metadata.json`` for the served bundle: the bundle's own (when present), adapted to ``dims``.

    MONAI Label reads ``network_data_format``: the number of spatial entries of the input gives the dimension,
    the output ``channel_def`` gives the labels.

    Args:
        bundle: the bundle folder.
        cfg: the merged inference config (for ``in_channels`` and ``num_classes``).
        dims: 2 or 3.
    """
    src = bundle / "configs" / "metadata.json"
    meta = json.loads(src.read_text()) if src.is_file() else {"version": "0.0.1",
                                                              "changelog": {"0.0.1": "integration test bundle"}}
    meta = copy.deepcopy(meta)
    meta.setdefault("name", bundle.name)
    meta.setdefault("description", f"{bundle.name} bundle served by MONAI Label (integration test)")
    k, c = int(cfg["num_classes"]), int(cfg["in_channels"])
    shape = ["8*n"] * dims
    nf = meta.setdefault("network_data_format", {})
    nf["inputs"] = {"image": {"type": "image", "format": "magnitude", "num_channels": c, "spatial_shape": shape,
                              "dtype": "float32", "value_range": [],
                              "is_patch_data": False, "channel_def": {str(i): f"channel_{i}" for i in range(c)}}}
    channel_def = {"0": "background", **{str(i): ("foreground" if k == 2 else f"class_{i}") for i in range(1, k)}}
    nf["outputs"] = {"pred": {"type": "image", "format": "segmentation", "num_channels": k, "spatial_shape": shape,
                              "dtype": "float32",
                              "value_range": [], "is_patch_data": False, "channel_def": channel_def}}
    return meta


def calibrate_threshold(net: Any, parser: Any, image: Path) -> float:
    """A foreground threshold for fresh weights so that about half of ``image`` is foreground.

    Fresh weights predict one class everywhere; with the threshold (applied by the bundle's post-processing) at the
    median foreground probability the served mask holds both labels, so the test sees real label values. Uses the
    bundle's own preprocessing and inferer.

    Args:
        net: the ``MaskPathwaySegmenter`` (binary).
        parser: the bundle's ``ConfigParser``.
        image: the study image.
    """
    import torch

    # diffusion UNets start with a zero output convolution (constant 0.5 everywhere): give it small random weights
    with torch.no_grad():
        for name, param in net.named_parameters():
            if param.ndim > 1 and not bool(param.any()):
                param.normal_(0.0, 0.05)
    x = parser.get_parsed_content("preprocessing")({"image": str(image)})["image"][None]
    with torch.no_grad():
        probs = parser.get_parsed_content("inferer")(x, net)
    return float(probs[:, 1].flatten().median().clamp(1e-4, 1 - 1e-4))


def build_bundle(bundle: Path, out: Path, dims: int, overrides: dict[str, Any], model_pt: Path | None,
                 study: Path | None = None) -> dict[str, Any]:
    """Write a servable bundle folder: ``configs/inference.json``, ``configs/metadata.json``, ``models/model.pt``.

    Args:
        bundle: the source bundle (``bundles/cotrain``).
        out: the new bundle folder.
        dims: 2 or 3.
        overrides: top-level id overrides of the inference config.
        model_pt: trained weights to use; ``None``: a freshly initialised ``network_def``.
        study: with fresh binary weights, an image to calibrate the post-processing threshold on (see
        :func:`calibrate_threshold`).
    """
    import torch
    from monai.bundle import ConfigParser

    cfg = merged_config(bundle, dims, overrides)
    (out / "configs").mkdir(parents=True, exist_ok=True)
    (out / "models").mkdir(parents=True, exist_ok=True)
    (out / "configs" / "metadata.json").write_text(json.dumps(metadata_for(bundle, cfg, dims), indent=4))
    for extra in ("logging.conf",):
        if (bundle / "configs" / extra).is_file():
            shutil.copy(bundle / "configs" / extra, out / "configs" / extra)
    if model_pt is not None:
        shutil.copy(model_pt, out / "models" / "model.pt")
        selection = Path(model_pt).with_name(Path(model_pt).stem + "_selection.json")
        if selection.is_file():  # the validation threshold travels with the weights
            shutil.copy(selection, out / "models" / "model_selection.json")
    else:
        torch.manual_seed(0)
        parser = ConfigParser(cfg)
        parser["bundle_root"] = str(out)
        net = parser.get_parsed_content("network_def", instantiate=True)
        cfg["threshold"] = 0.5  # fresh weights: no validation selection
        if study is not None and int(cfg["num_classes"]) == 2:
            cfg["threshold"] = cfg["_calibrated_threshold"] = calibrate_threshold(net, parser, study)
        torch.save(net.state_dict(), out / "models" / "model.pt")
    (out / "configs" / "inference.json").write_text(json.dumps(cfg, indent=4))
    return cfg


def train_tiny_bundle(bundle: Path, out: Path, data: Path, small: dict[str, Any]) -> dict[str, Any]:
    """Train a copy of the co-training bundle for one short epoch (plain CPS, tiny synthetic 2D data) in ``out``.

    The settings are given to the training command only; training writes them into ``out``'s own configs, so
    MONAI Label serves the trained folder as it is (no override in the served config, none in a request).

    Args:
        bundle: the source bundle (``bundles/cotrain``).
        out: the trained bundle folder (created).
        data: folder for the synthetic dataset.
        small: top-level training settings (smaller channels on CPU).

    Returns:
        the trained folder's ``configs/inference.json``.
    """
    from custom_components.data import make_synthetic_dataset
    from custom_components.data.splits import make_split, write_split

    shutil.copytree(bundle, out, ignore=shutil.ignore_patterns("models", "eval", "outputs", "__pycache__"))
    dl = make_synthetic_dataset(data, num_cases=16, image_size=32, seed=0)
    split = write_split(make_split(dl, 0.5, seed=0), dl.parent, data / "split.json")
    settings = {**small, "roi_size": [32, 32], "teacher_ckpt": "", "rounds": 0, "max_epochs": 1, "val_interval": 1,
                "batch_size": 2, "val_batch_size": 2, "num_workers": 0, "epoch_length": 4}
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(out / "configs" / "train.json"),
           "--dataset_dir", str(data), "--datalist", str(split)]
    for k, v in settings.items():
        cmd += [f"--{k}", json.dumps(v) if not isinstance(v, str) else v]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=out)
    if proc.returncode != 0 or not (out / "models" / "model.pt").is_file():
        raise RuntimeError(f"training the tiny bundle in {out} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    log(f"trained {out} (1 epoch, plain CPS): models/model.pt; settings written into its configs")
    return json.loads((out / "configs" / "inference.json").read_text())


def write_studies(studies: Path) -> dict[str, dict[str, Any]]:
    """One 2D RGB PNG and one 3D NIfTI with a bright blob; returns ``{image id: {path, shape}}``.

    Args:
        studies: the studies folder (created).
    """
    import nibabel as nib
    import numpy as np
    from PIL import Image

    studies.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    h, w = 40, 52  # PIL: (rows, cols); MONAI reads PNGs as (cols, rows)
    yy, xx = np.mgrid[:h, :w]
    blob = ((yy - 18) ** 2 / 100 + (xx - 26) ** 2 / 160) <= 1
    grey = np.clip(0.25 + 0.5 * blob + rng.normal(0, 0.05, (h, w)), 0, 1)
    rgb = (np.stack([grey, 0.8 * grey, 0.6 * grey], -1) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(studies / "case2d.png")
    shape3 = (36, 30, 20)
    g = np.meshgrid(*[np.arange(s) for s in shape3], indexing="ij")
    vol = (sum(((a - s / 2) / (s / 4)) ** 2 for a, s in zip(g, shape3)) <= 1).astype(np.float32)
    vol = vol + rng.normal(0, 0.05, shape3).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.diag([0.8, 0.8, 2.0, 1.0])), str(studies / "case3d.nii.gz"))
    return {"case2d": {"path": studies / "case2d.png", "shape": (h, w), "dims": 2},
            "case3d": {"path": studies / "case3d.nii.gz", "shape": shape3, "dims": 3}}


def http(method: str, url: str, timeout: float, data: bytes | None = None,
         headers: dict | None = None) -> tuple[int, bytes, dict]:
    """One HTTP request to the loopback server.

    Args:
        method: ``GET`` or ``POST``.
        url: the full URL (``http://127.0.0.1:...``).
        timeout: seconds.
        data: the request body.
        headers: request headers.
    """
    if not url.startswith(f"http://{HOST}:"):
        raise ValueError(f"refusing a non-loopback URL: {url}")
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers or {})


def multipart_params(params: dict[str, Any]) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body with one ``params`` field (what MONAI Label's /infer expects).

    Args:
        params: the inference parameters.
    """
    boundary = "----monailabel-it-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; "
            f"name=\"params\"\r\n\r\n{json.dumps(params)}\r\n--{boundary}--\r\n").encode()
    return body, f"multipart/form-data; boundary={boundary}"


def read_mask(content: bytes, headers: dict, dims: int) -> Any:
    """Decode the returned mask file into a numpy array in the input's (file) orientation.

    Args:
        content: the file bytes.
        headers: response headers (content type, file name).
        dims: 2 (PNG) or 3 (NIfTI).
    """
    import numpy as np

    if dims == 2:
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(content)))
    import nibabel as nib

    suffix = ".nii.gz" if content[:2] == b"\x1f\x8b" else ".nii"
    with tempfile.NamedTemporaryFile(suffix=suffix, delete=False) as f:
        f.write(content)
        name = f.name
    try:
        img = nib.load(name)
        return np.asarray(img.dataobj), img.affine
    finally:
        os.unlink(name)


def stop(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """Stop the server's process group: SIGTERM, then SIGKILL after ``grace`` seconds.

    Args:
        proc: the server process (started in its own session).
        grace: seconds to wait after SIGTERM.
    """
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def run(args: argparse.Namespace) -> int:
    """Build, start, check, stop; return the exit code (0: all checks passed).

    Args:
        args: parsed command-line arguments.
    """
    import numpy as np

    deadline = time.monotonic() + args.timeout
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="monailabel-it-"))
    work.mkdir(parents=True, exist_ok=True)
    monailabel_bin = Path(sys.prefix) / "bin" / "monailabel"
    if not monailabel_bin.is_file():
        log(f"FAIL: {monailabel_bin} not found; run this with the MONAI Label environment's python "
            "(scripts/setup_monailabel_env.sh).")
        return 2
    app = work / "app"
    if app.exists():
        shutil.rmtree(app)
    bundle = Path(args.bundle).resolve()
    small = {"channels": [16, 32, 64], "norm_num_groups": 8} if args.small else {}
    small.update({k: json.loads(v) for k, v in (o.split("=", 1) for o in args.override)})
    cases = write_studies(work / "studies")
    if args.model_pt:
        cfg2 = build_bundle(bundle, app / "model" / "cotrain_2d", 2, {**small, "num_workers": 0}, Path(args.model_pt),
                            cases["case2d"]["path"])
    else:  # the 2D model is a bundle trained here, served as it is: its own configs carry every setting
        cfg2 = train_tiny_bundle(bundle, app / "model" / "cotrain_2d", work / "data", small)
    cfg3 = build_bundle(bundle, app / "model" / "cotrain_3d", 3, {**small, "num_workers": 0, "roi_size": [32, 32, 16]},
                        None, cases["case3d"]["path"])
    log(f"bundles from {bundle}/configs/inference.json -> {app / 'model'} (2D roi {cfg2['roi_size']}, 3D roi "
        f"{cfg3['roi_size']}, "
        f"3D inferer {cfg3.get('eval_inferer', {}).get('_target_', '?')})")
    write_app(app, {"cotrain_2d": app / "model" / "cotrain_2d", "cotrain_3d": app / "model" / "cotrain_3d"})
    port = args.port or free_port()
    cmd = [str(monailabel_bin), "start_server", "--app", str(app), "--studies", str(work / "studies"), "--host", HOST,
           "--port", str(port),
           "--conf", "models", "cotrain_2d,cotrain_3d", "--conf", "zoo_source", "local", "--conf", "sam2", "false",
           "--conf", "preload", "false", "--conf", "skip_trainers", "true"]
    log("starting: " + " ".join(cmd))
    server_log = open(work / "server.log", "w")
    # the `monailabel` launcher runs `python -m monailabel.main`: put this environment's python first on PATH
    env = {**os.environ, "PATH": f"{Path(sys.prefix) / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
           "MONAI_LABEL_DATASTORE_AUTO_RELOAD": "false", "PYTHONUNBUFFERED": "1",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    proc = subprocess.Popen(cmd, stdout=server_log, stderr=subprocess.STDOUT, cwd=work, env=env, start_new_session=True)
    base = f"http://{HOST}:{port}"
    failures: list[str] = []
    try:
        info = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                failures.append(f"server exited early with code {proc.returncode}")
                break
            try:
                status, body, _ = http("GET", f"{base}/info/", timeout=5)
                if status == 200:
                    info = json.loads(body)
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout):
                pass
            time.sleep(1.0)
        if info is None:
            failures.append("GET /info/ never answered 200" if not failures else "")
        else:
            models = info.get("models", {})
            log(f"GET /info/ -> 200: name={info.get('name')!r}, models={sorted(models)}")
            for name, dims, cfg in (("cotrain_2d", 2, cfg2), ("cotrain_3d", 3, cfg3)):
                m = models.get(name)
                if m is None:
                    failures.append(f"/info/ lists no model {name}")
                    continue
                log(f"  {name}: type={m.get('type')}, dimension={m.get('dimension')}, labels={m.get('labels')}")
                if m.get("dimension") != dims:
                    failures.append(f"{name}: dimension {m.get('dimension')} != {dims}")
            for image_id, case in cases.items():
                dims = case["dims"]
                name = f"cotrain_{dims}d"
                k = int((cfg2 if dims == 2 else cfg3)["num_classes"])
                body, ctype = multipart_params({"device": "cpu"})
                t0 = time.monotonic()
                remaining = max(5.0, deadline - time.monotonic())
                status, content, headers = http("POST", f"{base}/infer/{name}?image={image_id}&output=image",
                                                timeout=remaining, data=body, headers={"Content-Type": ctype})
                if status != 200:
                    failures.append(f"POST /infer/{name}?image={image_id} -> {status}: {content[:500]!r}")
                    continue
                decoded = read_mask(content, headers, dims)
                mask = decoded if dims == 2 else decoded[0]
                labels = sorted(int(v) for v in np.unique(mask))
                log(f"POST /infer/{name}?image={image_id}&output=image -> 200 in {time.monotonic() - t0:.1f} s: "
                    f"{len(content)} bytes, mask shape {tuple(mask.shape)} (input {tuple(case['shape'])}), labels "
                    f"{labels}")
                if tuple(mask.shape) != tuple(case["shape"]):
                    failures.append(f"{image_id}: mask shape {tuple(mask.shape)} != input shape {tuple(case['shape'])}")
                if not set(labels) <= set(range(k)):
                    failures.append(f"{image_id}: labels {labels} outside [0, {k})")
                if "_calibrated_threshold" in (cfg2 if dims == 2 else cfg3) and len(labels) < 2:
                    failures.append(f"{image_id}: expected background and foreground with the calibrated threshold, "
                                    f"got labels {labels}")
                if dims == 3:
                    import nibabel as nib

                    ref = nib.load(str(case["path"])).affine
                    if not np.allclose(decoded[1], ref, atol=1e-4):
                        failures.append(f"{image_id}: mask affine differs from the input's")
    finally:
        stop(proc)
        server_log.close()
        log(f"server stopped (exit code {proc.returncode}); log: {work / 'server.log'}")
    failures = [f for f in failures if f]
    if failures:
        for f in failures:
            log(f"FAIL: {f}")
        tail = (work / "server.log").read_text(errors="replace").splitlines()[-40:]
        print("---- server log (last 40 lines) ----\n" + "\n".join(tail))
        return 1
    if not args.work and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    log("PASSED: /info/ and /infer/ answered for 2D and 3D; masks have the input geometry and valid labels")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: arguments (default ``sys.argv[1:]``).
    """
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default=str(ROOT / "bundles" / "cotrain"),
                    help="bundle whose configs/inference.json is served")
    ap.add_argument("--model-pt", default=None,
                    help="trained models/model.pt for the 2D bundle (default: fresh weights)")
    ap.add_argument("--work", default=None,
                    help="work folder to keep (default: a temporary folder, removed on success)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    ap.add_argument("--port", type=int, default=0, help="server port on 127.0.0.1 (default: a free one)")
    ap.add_argument("--timeout", type=float, default=420.0, help="overall time limit in seconds")
    ap.add_argument("--small", action=argparse.BooleanOptionalAction, default=True,
                    help="smaller network channels (CPU speed)")
    ap.add_argument("--override", action="append", default=[],
                    help="ID=JSON override of the served inference configs (repeatable)")
    ap.add_argument("--write-app", default=None, metavar="DIR",
                    help="only write the MONAI Label app to DIR, serving --bundle as model "
                    "'cotrain' (its models/model.pt must exist), and exit")
    args = ap.parse_args(argv)
    if args.write_app:
        bundle = Path(args.bundle).resolve()
        write_app(Path(args.write_app), {bundle.name: bundle})
        print(f"wrote {args.write_app}/main.py and model/{bundle.name} -> {bundle}")
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
