"""``scripts/benchmark.py --quick``: every phase runs on CPU and the JSON carries positive measurements."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "benchmark.py"


def _load():
    spec = importlib.util.spec_from_file_location("benchmark_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory):
    bench = _load()
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    threads = torch.get_num_threads()
    try:
        res = bench.main(["--quick", "--output", str(out)])
    finally:
        torch.set_num_threads(threads)
    return res, json.loads(out.read_text())


def test_quick_json_has_positive_measurements(quick_result):
    res, written = quick_result
    assert written["cases"] == json.loads(json.dumps(res["cases"]))
    assert written["device"] and written["versions"]["torch"] == torch.__version__
    assert {"monai", "ignite", "numpy", "python"} <= set(written["versions"])
    cases = written["cases"]
    assert not [c for c in cases if "error" in c], [c["error"] for c in cases if "error" in c]
    phases = {c["phase"] for c in cases}
    assert phases == {"sup", "p1", "p2", "infer", "infer_ens4", "ddim"}
    assert {c["rounds"] for c in cases if c["phase"] == "p2"} == {0, 2}
    for c in cases:
        for field in ("ms_per_step", "samples_per_s", "tflops", "gflop_per_step", "peak_mem_mb"):
            assert c[field] > 0, (c["case"], field)
    trained = [c for c in cases if c["phase"] in ("sup", "p1", "p2")]
    assert all(c["first_loss"] > 0 for c in trained)
    bf16 = [c for c in cases if c["switch"] == "bf16"]
    assert bf16 and all(c["speedup_vs_eager_fp32"] > 0 for c in bf16)
    assert all(c["first_loss_rel_diff"] < 0.1 for c in bf16)  # same weights, inputs and noise draws


def test_quick_json_measures_data_loading(quick_result):
    _, written = quick_result
    dl = written["data_loading"]
    assert {d["pipeline"] for d in dl} == {"dataset", "cache"}
    for d in dl:
        assert d["wait_ms_per_step"] > 0 and d["compute_ms_per_step"] > 0 and 0 < d["wait_share"] < 1


def test_full_plan_measures_every_switch_against_eager_fp32():
    bench = _load()
    plan = bench.plan(False, torch.device("cuda"))
    la_p2 = {s for wl, ph, r, s in plan if wl == "la" and ph == "p2" and r == 3}
    assert {"eager_fp32", "tf32", "cudnn_benchmark", "bf16", "fp16", "channels_last", "batch_rounds_off",
            "fast_compile"} <= la_p2
    assert plan[0] == ("la", "p2", 3, "eager_fp32")  # every speed-up has its reference measured first
    assert set(bench.SWITCHES) >= {s for *_, s in plan}


def test_hard_dice_and_fastpath_helpers():
    bench = _load()
    a = torch.tensor([[[0.9, 0.1]], [[0.1, 0.9]]]).permute(1, 0, 2)  # (B=1, K=2, 2)
    assert bench.hard_dice(a, a) == 1.0
    assert bench.hard_dice(a, a.flip(1)) == 0.0
    from custom_components.runtime.fastpath import backbones_of, compile_backbones, set_backend_flags, restore_backend_flags
    from custom_components.networks import DiffusionTeacher

    t = DiffusionTeacher(2, 1, 2, channels=(4, 8), norm_num_groups=2)
    assert backbones_of(t) == [t.mask_net, t.image_net]
    with pytest.raises(TypeError, match="expects nn.Module"):
        compile_backbones([object()])
    prev = set_backend_flags(tf32=True, cudnn_benchmark=True)
    assert torch.backends.cudnn.benchmark and torch.get_float32_matmul_precision() == "high"
    restore_backend_flags(prev)
    assert torch.backends.cudnn.benchmark == prev["cudnn_benchmark"]


def test_channels_last_keeps_outputs_and_state_dict():
    from custom_components.runtime.fastpath import to_channels_last
    from custom_components.networks import DiffusionTeacher

    torch.manual_seed(0)
    t = DiffusionTeacher(3, 1, 2, channels=(4, 8), norm_num_groups=2).eval()
    x = torch.randn(1, 3, 8, 8, 8)
    ts = torch.tensor([10])
    ref = t.mask_net(x, ts)
    keys = list(t.state_dict())
    to_channels_last(t.mask_net, 3)
    torch.testing.assert_close(t.mask_net(x, ts), ref, rtol=1e-4, atol=1e-5)
    assert list(t.state_dict()) == keys
    with pytest.raises(ValueError, match="spatial_dims 2 or 3"):
        to_channels_last(t.mask_net, 1)
