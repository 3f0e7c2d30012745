"""Export a bundle's deployable network to TorchScript (MONAI ``ckpt_export``) and ONNX, and check parity.

TorchScript: :func:`export_torchscript` calls :func:`monai.bundle.ckpt_export`, which writes ``models/model.ts`` with
``metadata.json`` and the config embedded (``extra/metadata.json``, ``extra/inference.json``). It scripts the
network and falls back to tracing (at the metadata's input shape) when scripting fails: MONAI's
``DiffusionModelUNet`` cannot be scripted (``SpatialAttentionBlock`` reshapes with ``*shape``) but traces fine,
including a seeded ``torch.Generator`` used inside ``forward`` (the traced graph keeps the generator and its
seed, so the noise is identical and follows the input's shape).

ONNX: :func:`export_onnx` uses MONAI's ``convert_to_onnx`` (the converter of ``monai.bundle onnx_export``; traced
by the TorchScript-based ``torch.onnx.export``, ``dynamo=False``: the dynamo exporter needs ``onnxscript``). ONNX
has no seeded ``torch.Generator``: a wrapper that draws its noise in ``forward`` cannot be exported and raises
:class:`ExportError` with that reason; a wrapper that keeps its noise in a registered buffer (cropped to the input's
spatial shape) exports and matches eager outputs.

Building the network from a bundle config runs the config's code: verify a received bundle first
(:func:`~custom_components.bundle_tools.verify.verify_bundle`).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.networks.utils import convert_to_onnx

__all__ = [
    "ExportError",
    "default_config_file",
    "metadata_input_shape",
    "build_bundle_network",
    "export_torchscript",
    "export_onnx",
    "load_exported",
    "check_parity",
    "verify_exported_in_out",
    "record_export",
]


class ExportError(RuntimeError):
    """Raised when a network cannot be exported; the message names the network, the format and the cause."""


def default_config_file(bundle_dir: str | Path) -> Path:
    """Return ``configs/inference.json`` (or ``.yaml``), else ``configs/train.json``, of a bundle.

    Args:
        bundle_dir: the bundle folder.

    Raises:
        FileNotFoundError: none of them exists.
    """
    root = Path(bundle_dir)
    for name in ("inference", "train"):
        for suffix in (".json", ".yaml", ".yml"):
            p = root / "configs" / f"{name}{suffix}"
            if p.is_file():
                return p
    raise FileNotFoundError(f"{root}: no configs/inference.json or configs/train.json to define the network")


def metadata_input_shape(metadata: dict[str, Any] | str | Path, batch: int = 1, n: int = 1, p: int = 1) -> list[int]:
    """Concrete input shape ``[batch, C, *spatial]`` from ``network_data_format.inputs.image`` of metadata.

    Symbolic sizes follow MONAI's rules (``"16*n"`` -> 16 n, ``"2**p"`` -> 2^p, ``"*"`` -> 1).

    Args:
        metadata: the metadata dictionary or the path of ``metadata.json``.
        batch: batch size.
        n: value of ``n`` in ``"k*n"`` sizes.
        p: value of ``p`` in ``"k**p"`` sizes.
    """
    from monai.bundle.scripts import _get_fake_spatial_shape  # noqa: PLC2701 - the rule MONAI's checks use

    meta = json.loads(Path(metadata).read_text()) if isinstance(metadata, (str, Path)) else metadata
    try:
        image = meta["network_data_format"]["inputs"]["image"]
        channels, spatial = int(image["num_channels"]), image["spatial_shape"]
    except (KeyError, TypeError) as e:
        raise ValueError("metadata: network_data_format.inputs.image needs num_channels and spatial_shape "
                         f"({e})") from e
    return [batch, channels, *(int(s) for s in _get_fake_spatial_shape(spatial, p=p, n=n, any=1))]


def build_bundle_network(
    bundle_dir: str | Path,
    net_id: str = "network_def",
    config_file: str | Path | None = None,
    ckpt_file: str | Path | None = None,
) -> torch.nn.Module:
    """Instantiate ``net_id`` from a bundle config and load ``models/model.pt`` (``weights_only=True``), in eval mode.

    Args:
        bundle_dir: the bundle folder.
        net_id: config id of the network.
        config_file: config defining it; defaults to :func:`default_config_file`.
        ckpt_file: state_dict to load; defaults to ``models/model.pt``; pass ``""`` to keep random weights.
    """
    from monai.bundle import ConfigParser

    root = Path(bundle_dir).resolve()
    parser = ConfigParser()
    parser.read_config(str(config_file or default_config_file(root)))
    meta = root / "configs" / "metadata.json"
    if meta.is_file():
        parser.read_meta(str(meta))
    parser["bundle_root"] = str(root)
    net = parser.get_parsed_content(net_id)
    if not isinstance(net, torch.nn.Module):
        raise ExportError(f"{root}: config id {net_id!r} is a {type(net).__name__}, not a torch.nn.Module")
    ckpt = root / "models" / "model.pt" if ckpt_file is None else (Path(ckpt_file) if ckpt_file else None)
    if ckpt is not None:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    return net.eval()


def _command(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def record_export(bundle_dir: str | Path, fmt: str, record: dict[str, Any]) -> None:
    """Record an exported model under ``exported_models.<fmt>`` of the bundle's ``configs/metadata.json``.

    The version and changelog are left alone: bump them (and re-package) when you ship the export.

    Args:
        bundle_dir: the bundle folder.
        fmt: ``torchscript`` or ``onnx``.
        record: at least ``{"file": "models/<name>"}``; see the schema's ``exported_models``.
    """
    meta_path = Path(bundle_dir) / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta.setdefault("exported_models", {})[fmt] = record
    meta_path.write_text(json.dumps(meta, indent=4) + "\n", encoding="utf-8")


def _rel_in_bundle(root: Path, out: Path) -> str | None:
    try:
        return out.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


def export_torchscript(
    source: str | Path | torch.nn.Module,
    out_path: str | Path | None = None,
    net_id: str = "network_def",
    config_file: str | Path | None = None,
    ckpt_file: str | Path | None = None,
    use_trace: bool | None = None,
    input_shape: Sequence[int] | None = None,
    record_in_metadata: bool = True,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Export a bundle's network (via :func:`monai.bundle.ckpt_export`) or a module to TorchScript.

    For a bundle, the file embeds ``metadata.json`` and the config (``extra/*.json``), exactly as
    ``python -m monai.bundle ckpt_export`` writes it; the command that reproduces it is recorded under
    ``exported_models.torchscript`` of ``metadata.json`` when the output lies inside the bundle.

    Args:
        source: a bundle folder, or an ``nn.Module`` (already holding its weights).
        out_path: the ``.ts`` file; defaults to ``<bundle>/models/model.ts`` (required for a module).
        net_id: config id of the network (bundle only).
        config_file: config defining the network and embedded in the file; defaults to inference, else train.
        ckpt_file: weights; defaults to ``<bundle>/models/model.pt``.
        use_trace: ``False`` scripts, ``True`` traces at ``input_shape``; ``None`` scripts and falls back to tracing.
        input_shape: ``[N, C, *spatial]`` for tracing; defaults to the metadata's input shape.
        record_in_metadata: write ``exported_models.torchscript`` into the bundle's ``metadata.json``.
        metadata: for a module: metadata dictionary to embed (and to read the input shape from).

    Returns:
        the path of the TorchScript file.

    Raises:
        ExportError: neither scripting nor tracing works (message has both causes).
    """
    if isinstance(source, torch.nn.Module):
        return _export_module_torchscript(source, out_path, use_trace, input_shape, metadata)
    from monai.bundle import ckpt_export

    root = Path(source).resolve()
    cfg = Path(config_file).resolve() if config_file else default_config_file(root)
    meta_file = root / "configs" / "metadata.json"
    out = Path(out_path).resolve() if out_path else root / "models" / "model.ts"
    ckpt = Path(ckpt_file).resolve() if ckpt_file else root / "models" / "model.pt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"{root}: weights {ckpt} not found; train the bundle or pass ckpt_file")
    if input_shape is None and meta_file.is_file():
        input_shape = metadata_input_shape(meta_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    attempts = [False, True] if use_trace is None else [bool(use_trace)]
    causes = []
    method = None
    for trace in attempts:
        try:
            ckpt_export(
                net_id=net_id,
                filepath=str(out),
                ckpt_file=str(ckpt),
                meta_file=str(meta_file),
                config_file=str(cfg),
                use_trace=trace,
                input_shape=list(input_shape) if (trace and input_shape) else None,
                bundle_root=str(root),
            )
            method = "trace" if trace else "script"
            break
        except Exception as e:  # torch.jit raises many types
            causes.append(f"{'trace' if trace else 'script'}: {type(e).__name__}: "
                          f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}")
    if method is None:
        raise ExportError(f"{root}: TorchScript export of {net_id!r} failed ({'; '.join(causes)})")
    rel = _rel_in_bundle(root, out)
    if record_in_metadata and rel is not None:
        argv = ["python", "-m", "monai.bundle", "ckpt_export", net_id, "--filepath", rel,
                "--ckpt_file", _rel_in_bundle(root, ckpt) or str(ckpt), "--meta_file", "configs/metadata.json",
                "--config_file", _rel_in_bundle(root, cfg) or str(cfg), "--bundle_root", "."]
        if method == "trace":
            argv += ["--use_trace", "True", "--input_shape", json.dumps(list(input_shape or []), separators=(",", ":"))]
        record_export(root, "torchscript", {
            "file": rel,
            "method": method,
            "command": _command(argv),
            "input_shape": [int(s) for s in input_shape] if input_shape else [],
            "torch_version": torch.__version__.split("+")[0],
        })
    return out


def _export_module_torchscript(
    net: torch.nn.Module,
    out_path: str | Path | None,
    use_trace: bool | None,
    input_shape: Sequence[int] | None,
    metadata: dict[str, Any] | None,
) -> Path:
    from monai.data import save_net_with_metadata
    from monai.networks.utils import convert_to_torchscript

    if out_path is None:
        raise ValueError("export_torchscript: out_path is required when exporting a module")
    if input_shape is None and metadata is not None:
        input_shape = metadata_input_shape(metadata)
    net.eval()
    attempts = [False, True] if use_trace is None else [bool(use_trace)]
    causes = []
    for trace in attempts:
        if trace and not input_shape:
            causes.append("trace: no input_shape (pass input_shape or metadata)")
            continue
        try:
            inputs = [torch.rand(*input_shape)] if trace else None
            ts = convert_to_torchscript(net, inputs=inputs, use_trace=trace)
            out = Path(out_path)
            out.parent.mkdir(parents=True, exist_ok=True)
            save_net_with_metadata(ts, str(out), meta_values=metadata or {}, include_config_vals=False,
                                   append_timestamp=False)
            return out
        except Exception as e:
            causes.append(f"{'trace' if trace else 'script'}: {type(e).__name__}: "
                          f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}")
    raise ExportError(f"TorchScript export of {type(net).__name__} failed ({'; '.join(causes)})")


def export_onnx(
    source: str | Path | torch.nn.Module,
    out_path: str | Path | None = None,
    input_shape: Sequence[int] | None = None,
    net_id: str = "network_def",
    config_file: str | Path | None = None,
    ckpt_file: str | Path | None = None,
    opset_version: int = 17,
    dynamic_shapes: bool = True,
    record_in_metadata: bool = True,
) -> Path:
    """Export a bundle's network or a module to ONNX with MONAI's ``convert_to_onnx`` (input ``image``, output
    ``pred``).

    The converter of ``monai.bundle onnx_export``, called on the network built here: ``onnx_export`` itself loads the
    weights with ``copy_model_state``, which skips keys that do not match, where :func:`build_bundle_network` loads
    them strictly.

    Args:
        source: a bundle folder (network built from its config, weights ``models/model.pt``) or an ``nn.Module``.
        out_path: the ``.onnx`` file; defaults to ``<bundle>/models/model.onnx`` (required for a module).
        input_shape: ``[N, C, *spatial]`` example shape; defaults to the bundle metadata's input shape.
        net_id: config id of the network (bundle only).
        config_file: config defining the network; defaults to inference, else train.
        ckpt_file: weights; defaults to ``<bundle>/models/model.pt``.
        opset_version: ONNX opset.
        dynamic_shapes: mark the batch and spatial axes dynamic (``batch``, ``dim0``...).
        record_in_metadata: write ``exported_models.onnx`` into the bundle's ``metadata.json`` (bundle only).

    Returns:
        the path of the ONNX file.

    Raises:
        ExportError: the graph cannot be expressed in ONNX (e.g. noise drawn from a seeded ``torch.Generator``
            inside ``forward``); the message names the network and the cause.
    """
    root: Path | None = None
    if isinstance(source, torch.nn.Module):
        if out_path is None or input_shape is None:
            raise ValueError("export_onnx: out_path and input_shape are required when exporting a module")
        net = source.eval()
    else:
        root = Path(source).resolve()
        net = build_bundle_network(root, net_id, config_file, ckpt_file)
        if input_shape is None:
            input_shape = metadata_input_shape(root / "configs" / "metadata.json")
    out = Path(out_path).resolve() if out_path else root / "models" / "model.onnx"  # type: ignore[operator]
    out.parent.mkdir(parents=True, exist_ok=True)
    x = torch.rand(*input_shape)
    axes = {0: "batch", **{i: f"dim{i - 2}" for i in range(2, len(input_shape))}} if dynamic_shapes else None
    try:
        convert_to_onnx(net, [x], input_names=["image"], output_names=["pred"], opset_version=opset_version,
                        dynamic_axes={"image": axes, "pred": axes} if axes else None, filename=str(out),
                        use_trace=True, dynamo=False)
    except Exception as e:
        if out.exists():
            out.unlink()
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = ""
        if "Generator" in str(e):
            hint = (" - the forward draws noise from a seeded torch.Generator, which ONNX cannot express; keep the "
                    "fixed noise in a registered buffer (cropped to the input's spatial shape) to export to ONNX")
        raise ExportError(f"ONNX export of {type(net).__name__} failed: {type(e).__name__}: {msg}{hint}") from e
    if root is not None and record_in_metadata:
        rel = _rel_in_bundle(root, out)
        if rel is not None:
            record_export(root, "onnx", {
                "file": rel,
                "method": "monai.networks.utils.convert_to_onnx(use_trace=True, dynamo=False)",
                "input_shape": [int(s) for s in input_shape],
                "opset_version": opset_version,
                "torch_version": torch.__version__.split("+")[0],
            })
    return out


def load_exported(path: str | Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """Load an exported model as a callable ``tensor -> tensor`` (TorchScript via ``torch.jit.load``, ONNX via
    onnxruntime on CPU).

    Args:
        path: a ``.ts``/``.pt`` TorchScript file or an ``.onnx`` file.

    Raises:
        ImportError: ONNX given and ``onnxruntime`` is not installed.
    """
    p = Path(path)
    if p.suffix == ".onnx":
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError(f"{p}: running ONNX models needs onnxruntime (pip install onnxruntime)") from e
        sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        in_name = sess.get_inputs()[0].name

        def run(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(np.asarray(sess.run(None, {in_name: x.detach().cpu().numpy()})[0]))

        return run
    ts = torch.jit.load(str(p), map_location="cpu").eval()

    def run_ts(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return ts(x)

    return run_ts


def check_parity(
    eager: torch.nn.Module,
    exported: str | Path | Callable[[torch.Tensor], torch.Tensor],
    inputs: Sequence[torch.Tensor],
    atol: float = 1e-5,
    rtol: float = 0.0,
) -> float:
    """Compare an exported model with the eager network on each input; return the largest absolute difference.

    Args:
        eager: the eager network (switched to eval mode).
        exported: path of a TorchScript/ONNX file or a loaded callable.
        inputs: input tensors ``[N, C, *spatial]``.
        atol: absolute tolerance.
        rtol: relative tolerance.

    Raises:
        AssertionError: shapes differ or a difference exceeds ``atol + rtol * |eager|`` (message gives the input
            shape and the largest difference).
    """
    run = load_exported(exported) if isinstance(exported, (str, Path)) else exported
    eager.eval()
    worst = 0.0
    for x in inputs:
        with torch.no_grad():
            ref = eager(x)
        out = run(x)
        if tuple(out.shape) != tuple(ref.shape):
            raise AssertionError(f"parity: input {tuple(x.shape)}: exported output shape {tuple(out.shape)} "
                                 f"!= eager {tuple(ref.shape)}")
        diff = (out.to(ref.dtype) - ref).abs()
        worst = max(worst, float(diff.max()))
        if bool((diff > atol + rtol * ref.abs()).any()):
            raise AssertionError(f"parity: input {tuple(x.shape)}: max |exported - eager| = {float(diff.max()):.3g} "
                                 f"exceeds atol={atol}, rtol={rtol}")
    return worst


def verify_exported_in_out(bundle_dir: str | Path, exported: str | Path, config_file: str | Path | None = None,
                           net_id: str = "network_def") -> None:
    """Run :func:`monai.bundle.verify_net_in_out` against ``metadata.json`` with the TorchScript file in place of
    the config's network (channels and dtype of the output must match ``network_data_format``).

    Args:
        bundle_dir: the bundle folder.
        exported: the TorchScript file.
        config_file: config defining ``net_id``; defaults to inference, else train.
        net_id: config id replaced by the loaded TorchScript module.
    """
    from monai.bundle import verify_net_in_out

    root = Path(bundle_dir).resolve()
    verify_net_in_out(
        net_id=net_id,
        meta_file=str(root / "configs" / "metadata.json"),
        config_file=str(config_file or default_config_file(root)),
        device="cpu",
        **{net_id: f"$torch.jit.load({str(Path(exported).resolve())!r}, map_location='cpu')", "bundle_root": str(root)},
    )
