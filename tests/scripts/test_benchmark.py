"""``scripts/benchmark.py --quick``: every phase runs on CPU and the JSON carries positive measurements."""

from __future__ import annotations

import json

import pytest
import torch
from script_loader import load_script


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory):
    bench = load_script("benchmark")
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
    bench = load_script("benchmark")
    plan = bench.plan(False, torch.device("cuda"))
    la_p2 = {s for wl, ph, r, s in plan if wl == "la" and ph == "p2" and r == 3}
    assert {"eager_fp32", "tf32", "cudnn_benchmark", "bf16", "fp16", "channels_last", "batch_rounds_off",
            "fast_compile"} <= la_p2
    assert plan[0] == ("la", "p2", 3, "eager_fp32")  # every speed-up has its reference measured first
    assert set(bench.SWITCHES) >= {s for *_, s in plan}


def test_hard_dice_and_fastpath_helpers():
    bench = load_script("benchmark")
    a = torch.tensor([[[0.9, 0.1]], [[0.1, 0.9]]]).permute(1, 0, 2)  # (B=1, K=2, 2)
    assert bench.hard_dice(a, a) == 1.0
    assert bench.hard_dice(a, a.flip(1)) == 0.0
    from custom_components.networks import DiffusionTeacher
    from custom_components.runtime.fastpath import (
        backbones_of,
        compile_backbones,
        restore_backend_flags,
        set_backend_flags,
    )

    t = DiffusionTeacher(2, 1, 2, channels=(4, 8), norm_num_groups=2)
    assert backbones_of(t) == [t.mask_net, t.image_net]
    with pytest.raises(TypeError, match="expects nn.Module"):
        compile_backbones([object()])
    prev = set_backend_flags(tf32=True, cudnn_benchmark=True)
    assert torch.backends.cudnn.benchmark and torch.get_float32_matmul_precision() == "high"
    restore_backend_flags(prev)
    assert torch.backends.cudnn.benchmark == prev["cudnn_benchmark"]


def test_channels_last_keeps_outputs_and_state_dict():
    from custom_components.networks import DiffusionTeacher
    from custom_components.runtime.fastpath import to_channels_last

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


def _cpu_run(bench, tmp_path, argv: list[str]) -> tuple[dict, str]:
    threads = torch.get_num_threads()
    out, md = tmp_path / "cpu.json", tmp_path / "cpu.md"
    try:
        res = bench.main(["--cpu", "--quick", "--iters", "2", "--warmup", "1", "--only", "ph2_cpu", "--output",
                          str(out),
                          "--markdown", str(md), *argv])
    finally:
        torch.set_num_threads(threads)
    assert json.loads(out.read_text())["cases"] == json.loads(json.dumps(res["cases"]))
    return res, md.read_text()


def test_cpu_table_ratios_and_cotrain_over_supervised(tmp_path, monkeypatch, capsys):
    bench = load_script("benchmark")
    monkeypatch.setattr(bench, "cpu_plan", lambda with_compile: [
        ("ph2_cpu", "p2", 3, ["reference", "cpu_fast"]), ("ph2_cpu", "sup", 0, ["reference", "cpu_fast"])])
    res, md = _cpu_run(bench, tmp_path, ["--no-rss"])
    by = {c["case"]: c for c in res["cases"]}
    assert set(by) == {"ph2_cpu/p2_R3/reference", "ph2_cpu/p2_R3/cpu_fast", "ph2_cpu/sup/reference",
                       "ph2_cpu/sup/cpu_fast"}
    for c in by.values():
        assert len(c["ms_all"]) == 2 and c["ms_per_step"] > 0
        assert c["speedup_vs_reference"] == pytest.approx(
            by[c["case"].rsplit("/", 1)[0] + "/reference"]["ms_per_step"] / c["ms_per_step"])
    assert by["ph2_cpu/p2_R3/reference"]["first_loss_rel_diff"] == 0.0
    assert by["ph2_cpu/p2_R3/cpu_fast"]["first_loss_rel_diff"] < 1e-2  # tiny nets; the 1e-3 check is in tests/engines
    ratio = res["cotrain_over_supervised"]["ph2_cpu/reference"]
    assert ratio == pytest.approx(
        by["ph2_cpu/p2_R3/reference"]["ms_per_step"] / by["ph2_cpu/sup/reference"]["ms_per_step"])
    assert "co-training iteration (R = 3) / supervised step, ph2_cpu, reference" in capsys.readouterr().out
    assert md.count("\n| ph2_cpu |") == 4 and "**cpu_fast**" in md and "supervised step at the same batch" in md
    assert res["device"].startswith("CPU: ") and res["threads"] == 1


def test_cpu_switches_option_times_only_the_named_switches_and_the_reference(tmp_path, monkeypatch):
    bench = load_script("benchmark")
    monkeypatch.setattr(bench, "cpu_plan", lambda with_compile: [
        ("ph2_cpu", "sup", 0, ["reference", "bf16", "cpu_fast"]), ("ph2_cpu", "p2", 3, ["reference", "bf16"])])
    res, _ = _cpu_run(bench, tmp_path, ["--no-rss", "--switches", "cpu_fast"])
    assert [c["case"] for c in res["cases"]] == ["ph2_cpu/sup/reference", "ph2_cpu/sup/cpu_fast",
                                                 "ph2_cpu/p2_R3/reference"]


def test_cpu_fast_backbone_groups_are_multiples_of_their_first_row(tmp_path, monkeypatch):
    """Issue 27: per pass against the supervised UNet of the same widths, co-training steps (fast backbone, R = 3 / 1,
    rounds on the unlabelled half) against the supervised step, one-pass inference against the supervised UNet;
    each group timed interleaved and every row a multiple of the group's first; the first-loss check kept."""
    bench = load_script("benchmark")
    monkeypatch.setattr(bench, "cpu_plan", lambda with_compile: [("ph2_cpu", ph, 0, sws)
                                                                  for ph, sws in bench.FAST_GROUPS])
    res, md = _cpu_run(bench, tmp_path, ["--no-rss", "--switches", "pass_fast,fast_R3_fp32,fast_R3,"
                                         "fast_R1_unlabeled,infer_fast"])
    by = {c["case"]: c for c in res["cases"]}
    assert list(by) == ["ph2_cpu/pass/pass_unet", "ph2_cpu/pass/pass_fast", "ph2_cpu/fast_step/sup_cpu_fast",
                        "ph2_cpu/fast_step/fast_R3_fp32", "ph2_cpu/fast_step/fast_R3",
                        "ph2_cpu/fast_step/fast_R1_unlabeled", "ph2_cpu/infer_cmp/infer_sup",
                        "ph2_cpu/infer_cmp/infer_fast"]
    for c in by.values():
        base = by[c["case"].rsplit("/", 1)[0] + "/" + c["baseline"]]
        assert c["x_of_baseline"] == pytest.approx(c["ms_per_step"] / base["ms_per_step"])
        assert res["fast_backbone"][c["case"]] == c["x_of_baseline"]
    assert by["ph2_cpu/fast_step/fast_R1_unlabeled"]["switch_rounds"] == 1
    assert by["ph2_cpu/fast_step/sup_cpu_fast"]["switch_phase"] == "sup"
    assert by["ph2_cpu/fast_step/fast_R3"]["first_loss_rel_diff"] < 1e-2  # bf16 against fp32, the same network
    assert "first_loss_rel_diff" not in by["ph2_cpu/fast_step/fast_R3_fp32"]  # nothing of its own to compare with
    assert "Issue 27, the fast backbone" in md and md.count("\n| ph2_cpu | fast_step |") == 4


@pytest.mark.slow
def test_cpu_quick_runs_every_group_with_peak_rss(tmp_path):
    res, _ = _cpu_run(load_script("benchmark"), tmp_path, [])
    phases = {(c["phase"], c["rounds"]) for c in res["cases"]}
    assert phases == {("p2", 3), ("p2", 0), ("p1", 0), ("sup", 0), ("infer", 0), ("infer_ens4", 0), ("ddim", 0),
                      ("pass", 0), ("fast_step", 0), ("infer_cmp", 0)}
    rss = [c for c in res["cases"] if "peak_rss_mb" in c]
    assert rss and all(c["peak_rss_mb"] > 0 for c in rss)
