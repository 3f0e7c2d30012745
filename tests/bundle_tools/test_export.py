"""TorchScript (monai.bundle.ckpt_export) and ONNX export with parity against the eager network, 2D and 3D.

Tolerances: TorchScript atol 1e-5 (same kernels as eager); ONNX via onnxruntime atol 1e-4 (other kernels);
outputs are softmax probabilities in [0, 1].
"""

from __future__ import annotations

import json
import zipfile

import pytest
import torch
from bt_bundle_factory import fake_deployable_def
from monai.bundle import verify_net_in_out

from custom_components.bundle_tools import (
    ExportError,
    build_bundle_network,
    check_parity,
    export_onnx,
    export_torchscript,
    package_bundle,
    verify_bundle,
    verify_exported_in_out,
)

TS_ATOL = 1e-5
ONNX_ATOL = 1e-4


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _inputs(sd: int, sizes=(16, 24)) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.rand(1, 1, *([s] * sd), generator=g) for s in sizes]


def test_unet_bundle_scripted_with_metadata_and_config_embedded(tiny_bundle, tmp_path):
    b = tiny_bundle()
    ts = export_torchscript(b)
    assert ts == b / "models" / "model.ts"
    meta = json.loads((b / "configs" / "metadata.json").read_text())
    rec = meta["exported_models"]["torchscript"]
    assert rec["file"] == "models/model.ts" and rec["method"] == "script"
    assert rec["command"].startswith("python -m monai.bundle ckpt_export network_def --filepath models/model.ts")
    names = zipfile.ZipFile(ts).namelist()
    assert (any(n.endswith("extra/metadata.json") for n in names)
            and any(n.endswith("extra/inference.json") for n in names))
    net = build_bundle_network(b)
    assert check_parity(net, ts, _inputs(2), atol=TS_ATOL) <= TS_ATOL
    verify_net_in_out("network_def", meta_file=str(b / "configs/metadata.json"),
                      config_file=str(b / "configs/inference.json"), device="cpu")
    verify_exported_in_out(b, ts)
    # the exported model ships in the package and the updated metadata stays valid
    report = verify_bundle(package_bundle(b, tmp_path / "pkg.zip"))
    assert report.ok, report.format()
    assert report.files_checked == 6


@pytest.mark.parametrize("sd", [2, 3])
def test_deployable_wrapper_torchscript_parity(tiny_bundle, sd):
    b = tiny_bundle(network_def=fake_deployable_def("generator"), spatial_dims=sd)
    ts = export_torchscript(b)  # scripting fails on DiffusionModelUNet: falls back to tracing
    rec = json.loads((b / "configs" / "metadata.json").read_text())["exported_models"]["torchscript"]
    assert rec["method"] == "trace" and rec["input_shape"] == [1, 1, *([16] * sd)]
    assert "--use_trace True --input_shape" in rec["command"]
    net = build_bundle_network(b)
    sizes = (16, 24) if sd == 2 else (16,)
    worst = check_parity(net, ts, _inputs(sd, sizes), atol=TS_ATOL)  # also at a shape other than the traced one
    assert worst <= TS_ATOL
    out = torch.jit.load(str(ts))(_inputs(sd, (16,))[0])
    assert torch.allclose(out.sum(1), torch.ones(()), atol=1e-5)  # class probabilities
    verify_net_in_out("network_def", meta_file=str(b / "configs/metadata.json"),
                      config_file=str(b / "configs/inference.json"), device="cpu")
    verify_exported_in_out(b, ts)


def test_parity_detects_a_different_model(tiny_bundle):
    b = tiny_bundle()
    ts = export_torchscript(b, record_in_metadata=False)
    other = build_bundle_network(b)
    with torch.no_grad():
        next(other.parameters()).add_(0.5)
    with pytest.raises(AssertionError, match="exceeds atol"):
        check_parity(other, ts, _inputs(2, (16,)), atol=TS_ATOL)


@pytest.mark.parametrize("sd", [2, 3])
def test_deployable_wrapper_onnx_parity_with_buffered_noise(tiny_bundle, sd):
    pytest.importorskip("onnxruntime")
    b = tiny_bundle(network_def=fake_deployable_def("buffer"), spatial_dims=sd)
    onnx_file = export_onnx(b)
    assert onnx_file == b / "models" / "model.onnx"
    rec = json.loads((b / "configs" / "metadata.json").read_text())["exported_models"]["onnx"]
    assert rec["file"] == "models/model.onnx" and rec["input_shape"] == [1, 1, *([16] * sd)]
    sizes = (16, 24) if sd == 2 else (16,)
    assert check_parity(build_bundle_network(b), onnx_file, _inputs(sd, sizes), atol=ONNX_ATOL) <= ONNX_ATOL


def test_onnx_export_of_generator_noise_fails_clearly(tiny_bundle):
    b = tiny_bundle(network_def=fake_deployable_def("generator"))
    with pytest.raises(ExportError, match="ONNX export of FakeMaskPathwaySegmenter failed.*torch.Generator"):
        export_onnx(b)
    assert not (b / "models" / "model.onnx").exists()
    assert "exported_models" not in json.loads((b / "configs" / "metadata.json").read_text())


def test_export_module_directly(tmp_path):
    from bt_fake_deployable import FakeMaskPathwaySegmenter

    net = FakeMaskPathwaySegmenter(spatial_dims=2).eval()
    ts = export_torchscript(net, tmp_path / "m.ts", input_shape=[1, 1, 16, 16], metadata={"version": "0.1.0"})
    assert check_parity(net, ts, _inputs(2, (16,)), atol=TS_ATOL) <= TS_ATOL
    with pytest.raises(ValueError, match="out_path is required"):
        export_torchscript(net)


@pytest.mark.parametrize("backbone", ["diffusion_unet", "fast"])
@pytest.mark.parametrize("sd", [2, 3])
def test_the_deployable_model_exports_with_parity_for_each_backbone(tiny_bundle, sd, backbone):
    """The real ``MaskPathwaySegmenter`` (not the stand-in) with either backbone: TorchScript and ONNX, parity at the
    export shape and another one."""
    net_def = {"_target_": "custom_components.networks.MaskPathwaySegmenter", "spatial_dims": "@spatial_dims",
               "in_channels": "@in_channels", "num_classes": "@num_classes", "channels": [8, 16],
               "norm_num_groups": 4, "backbone": backbone}
    b = tiny_bundle(network_def=net_def, spatial_dims=sd)
    net = build_bundle_network(b)
    sizes = (16, 24) if sd == 2 else (16,)
    ts = export_torchscript(b)
    assert check_parity(net, ts, _inputs(sd, sizes), atol=TS_ATOL) <= TS_ATOL
    pytest.importorskip("onnxruntime")
    assert check_parity(net, export_onnx(b), _inputs(sd, sizes), atol=ONNX_ATOL) <= ONNX_ATOL
