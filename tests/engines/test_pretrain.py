"""Tests for ``custom_components.engines.pretrain`` (METHOD.md, "Phase 1"): the cycle loss trains both pathways
through the undetached mask; the probe is trained on the labels that exist and never changes the teacher."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from torch.utils.data import DataLoader

from custom_components.engines import (
    TeacherMonitorEvaluator,
    TeacherPretrainTrainer,
    assignment_dice,
    class_fractions,
    permutation_dice,
    shuffled_masks,
)
from custom_components.metrics.output_average import BestAssignmentDice, OutputAverage
from custom_components.networks import ChannelProbe, DiffusionTeacher

torch.set_num_threads(1)

SIZE = 16
TINY = dict(channels=(8, 16), norm_num_groups=4)


def perturb_(module: torch.nn.Module, scale: float = 0.1) -> torch.nn.Module:
    """Noise on every parameter (drawn from the global RNG, so seeded runs stay identical): MONAI zero-initialises
    the UNet's output layer, which would block every gradient upstream of it on the first step."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
    return module


def make_data(dims: int = 2, c: int = 1, k: int = 2, n: int = 4, labels: str = "real") -> list[dict]:
    """``n`` tiny cases; ``labels``: ``"real"``, ``"ignore"`` (all -1, as ``FillMissingLabeld`` writes) or
    ``"none"``."""
    g = torch.Generator().manual_seed(99)
    data = []
    for _ in range(n):
        y = torch.randint(0, k, (1, *([SIZE] * dims)), generator=g)
        x = (y.float() / (k - 1)).expand(c, *y.shape[1:]) + 0.1 * torch.randn(c, *y.shape[1:], generator=g)
        item = {"image": x.clone()}
        if labels == "real":
            item["label"] = y
        elif labels == "ignore":
            item["label"] = torch.full_like(y, -1)
        data.append(item)
    return data


class RecordingSGD(torch.optim.SGD):
    """SGD that keeps a copy of every gradient (``grads``) and of every parameter after the step (``after``)."""

    def step(self, closure=None):  # type: ignore[override]
        self.grads = [
            None if p.grad is None else p.grad.detach().clone() for grp in self.param_groups for p in grp["params"]
        ]
        out = super().step(closure)
        self.after = [p.detach().clone() for grp in self.param_groups for p in grp["params"]]
        return out


def build(dims: int = 2, c: int = 1, k: int = 2, with_probe: bool = True, lr: float = 1e-2, seed: int = 0):
    torch.manual_seed(seed)
    teacher = perturb_(DiffusionTeacher(dims, c, k, **TINY))
    probe = ChannelProbe(dims, k) if with_probe else None
    opt = RecordingSGD(teacher.parameters(), lr=lr)
    probe_opt = torch.optim.SGD(probe.parameters(), lr=0.5) if with_probe else None
    return teacher, probe, opt, probe_opt


def run(teacher, probe, opt, probe_opt, data, max_epochs: int = 1, seed: int = 1, **kw) -> TeacherPretrainTrainer:
    loader = DataLoader(data, batch_size=2, shuffle=False)
    trainer = TeacherPretrainTrainer(
        device="cpu", max_epochs=max_epochs, train_data_loader=loader, teacher=teacher, optimizer=opt,
        probe=probe, probe_optimizer=probe_opt, **kw,
    )
    torch.manual_seed(seed)
    trainer.run()
    return trainer


def _norm(grads: list) -> float:
    return float(sum(g.abs().sum() for g in grads if g is not None))


def test_cycle_loss_gives_gradient_to_both_pathways() -> None:
    teacher, _, opt, _ = build(with_probe=False)
    n_mask = len(list(teacher.mask_net.parameters()))
    run(teacher, None, opt, None, make_data(labels="none"), epoch_length=1)
    mask_grads, image_grads = opt.grads[:n_mask], opt.grads[n_mask:]
    assert len(image_grads) == len(list(teacher.image_net.parameters()))
    assert _norm(image_grads) > 0
    # non-zero through the undetached mask m = 2 softmax(S(.)) - 1
    assert _norm(mask_grads) > 0
    # and not only at the mask pathway's last layer: the first convolution receives gradient too
    assert opt.grads[0].abs().sum() > 0


def test_cycle_loss_mask_gradient_vanishes_if_the_mask_were_detached() -> None:
    """Control for the test above: the mask pathway's gradient comes only from the undetached mask."""
    teacher, _, _, _ = build(with_probe=False)
    x = torch.stack([d["image"] for d in make_data(labels="none")[:2]])
    torch.manual_seed(0)
    p = teacher.segment(x).softmax(1)
    loss_live = teacher.reconstruct(x, 2 * p - 1).loss.mean()
    g_live = torch.autograd.grad(loss_live, list(teacher.mask_net.parameters()), allow_unused=True)
    torch.manual_seed(0)
    p = teacher.segment(x).softmax(1)
    loss_det = teacher.reconstruct(x, 2 * p.detach() - 1).loss.mean()
    g_det = torch.autograd.grad(loss_det, list(teacher.mask_net.parameters()), allow_unused=True)
    assert _norm(list(g_live)) > 0
    assert _norm(list(g_det)) == 0


def test_probe_loss_trains_only_the_probe() -> None:
    teacher, probe, opt, probe_opt = build()
    probe_before = [p.detach().clone() for p in probe.parameters()]
    trainer = run(teacher, probe, opt, probe_opt, make_data(labels="real"), epoch_length=1)
    assert float(trainer.state.output["loss_probe"]) > 0
    # the probe step ran after the teacher step: the teacher's gradients and weights are exactly those of the
    # teacher's own step, so the probe's backward reached no teacher parameter
    now_grads = [None if p.grad is None else p.grad for p in teacher.parameters()]
    for recorded, now in zip(opt.grads, now_grads):
        assert (recorded is None and now is None) or torch.equal(recorded, now)
    for after_step, now in zip(opt.after, teacher.parameters()):
        assert torch.equal(after_step, now.detach())
    # the probe itself was trained
    assert all(p.grad is not None for p in probe.parameters())
    assert any(not torch.equal(b, a.detach()) for b, a in zip(probe_before, probe.parameters()))


def _final_teacher_state(labels: str) -> tuple[dict, TeacherPretrainTrainer]:
    teacher, probe, opt, probe_opt = build(seed=3)
    trainer = run(teacher, probe, opt, probe_opt, make_data(labels=labels), max_epochs=2, seed=4)
    return {k: v.detach().clone() for k, v in teacher.state_dict().items()}, trainer


def test_labels_never_change_the_teacher() -> None:
    """A seeded CPU run with labels and the same run without any label give the same teacher weights:
    labels only ever train the probe (and the probe does not shift the teacher's random draws)."""
    with_labels, tr_l = _final_teacher_state("real")
    all_ignored, tr_i = _final_teacher_state("ignore")
    no_key, _ = _final_teacher_state("none")
    assert float(tr_l.state.output["loss_probe"]) > 0
    assert float(tr_i.state.output["loss_probe"]) == 0
    for key in with_labels:
        torch.testing.assert_close(with_labels[key], all_ignored[key], atol=1e-6, rtol=0, msg=key)
        torch.testing.assert_close(with_labels[key], no_key[key], atol=1e-6, rtol=0, msg=key)
    # and the run really trained the teacher (weights moved from the initial ones)
    teacher0, _, _, _ = build(seed=3)
    assert any(not torch.allclose(v, with_labels[k]) for k, v in teacher0.state_dict().items())


def test_probe_trains_only_on_samples_that_carry_a_label() -> None:
    """Mixed batch: one labelled, one ignored sample; the probe loss equals the loss on the labelled one."""
    teacher, probe, opt, probe_opt = build()
    data = make_data(labels="real", n=2)
    data[1]["label"] = torch.full_like(data[1]["label"], -1)
    seen = {}

    class SpyLoss(torch.nn.Module):
        def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            seen["n"], seen["target"] = logits.shape[0], target
            return logits.square().mean()

    run(teacher, probe, opt, probe_opt, data, epoch_length=1, probe_loss=SpyLoss())
    assert seen["n"] == 1
    assert torch.equal(seen["target"], data[0]["label"][None])


@pytest.mark.parametrize("dims,c,k", [(2, 3, 2), (2, 1, 4), (3, 1, 2)], ids=["2d-C3-K2", "2d-C1-K4", "3d-C1-K2"])
def test_trainer_runs_and_reports_every_component(dims: int, c: int, k: int) -> None:
    teacher, probe, opt, probe_opt = build(dims, c, k)
    iters = []
    data = make_data(dims, c, k, n=4 if dims == 2 else 2)
    loader = DataLoader(data, batch_size=2)
    trainer = TeacherPretrainTrainer(
        device="cpu", max_epochs=2 if dims == 2 else 1, train_data_loader=loader, teacher=teacher, optimizer=opt,
        probe=probe, probe_optimizer=probe_opt,
    )
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: iters.append(dict(e.state.output)))
    trainer.run()
    assert len(iters) == (4 if dims == 2 else 1)
    out = trainer.state.output
    expected = {"loss", "loss_cyc", "loss_probe", *[f"frac_class{i}" for i in range(k)]}
    assert expected <= set(out)
    for key in expected:
        assert torch.as_tensor(out[key]).numel() == 1 and torch.isfinite(torch.as_tensor(out[key]))
    assert float(out["loss"]) == float(out["loss_cyc"]) > 0
    assert sum(float(out[f"frac_class{i}"]) for i in range(k)) == pytest.approx(1.0, abs=1e-5)


def test_trainer_rejects_wrong_channels_naming_the_batch() -> None:
    teacher, _, opt, _ = build(c=3, with_probe=False)
    with pytest.raises(ValueError, match=r"training batch: expected 3 image channel\(s\), got 1"):
        run(teacher, None, opt, None, make_data(c=1, labels="none"), epoch_length=1)


def test_probe_without_optimizer_rejected() -> None:
    teacher, probe, opt, _ = build()
    with pytest.raises(ValueError, match="a probe needs a probe_optimizer"):
        TeacherPretrainTrainer("cpu", 1, DataLoader(make_data(), batch_size=2), teacher, opt, probe=probe)


def test_class_fractions_and_permutation_dice() -> None:
    y = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    y[..., :2, :] = 1  # top half foreground
    onehot = torch.nn.functional.one_hot(y[:, 0], 2).movedim(-1, 1).float()
    swapped = onehot.flip(1)  # the teacher put foreground in channel 0
    torch.testing.assert_close(class_fractions(swapped), torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(permutation_dice(swapped, y),
                               torch.tensor([1.0], dtype=permutation_dice(swapped, y).dtype))
    collapsed = torch.stack([torch.ones(1, 4, 4), torch.zeros(1, 4, 4)], 1)  # all class 0
    torch.testing.assert_close(class_fractions(collapsed), torch.tensor([1.0, 0.0]))
    # a collapse scores the best assignment: everything foreground -> Dice 2*8/(16+8)
    assert float(permutation_dice(collapsed, y)) == pytest.approx(2 * 8 / 24)


def test_monitor_evaluator_reports_probe_and_permutation_dice() -> None:
    teacher, probe, _, _ = build()
    loader = DataLoader(make_data(labels="real"), batch_size=2)
    evaluator = TeacherMonitorEvaluator(
        "cpu", loader, teacher, probe,
        key_val_metric={"val_probe_dice": OutputAverage("probe_dice")},
        additional_metrics={"val_perm_dice": BestAssignmentDice("assignment_dice"),
                            "val_rec_mse": OutputAverage("rec_mse"),
                            "gain_blank": OutputAverage("rec_gain_blank"),
                            "gain_shuffled": OutputAverage("rec_gain_shuffled"),
                            "frac0": OutputAverage("frac_class0"), "frac1": OutputAverage("frac_class1")},
    )
    evaluator.run()
    m = evaluator.state.metrics
    assert 0 <= m["val_probe_dice"] <= 1 and 0 <= m["val_perm_dice"] <= 1
    assert m["val_rec_mse"] > 0
    assert m["gain_blank"] != 0 and m["gain_shuffled"] != 0  # the image pathway reads its mask
    assert m["frac0"] + m["frac1"] == pytest.approx(1.0, abs=1e-6)
    # seeded: a second validation gives the same numbers
    first = dict(m)
    evaluator.run()
    for key in first:
        assert evaluator.state.metrics[key] == pytest.approx(first[key], abs=1e-7)


def test_all_foreground_baseline_and_structure_warning(tmp_path, caplog) -> None:
    from custom_components.engines.pretrain import all_foreground_dice, phase1_warnings, structure_warning

    y = torch.zeros(2, 1, 4, 4, dtype=torch.long)
    y[0, :, :2] = 1  # half foreground: all-foreground Dice 2*8/(8+16)
    torch.testing.assert_close(all_foreground_dice(y, 2), torch.tensor([2 * 8 / 24, 0.0], dtype=torch.float64))
    w = structure_warning(0.40, 0.45)
    assert w and "best-assignment Dice 0.4000 does not beat the all-foreground baseline 0.4500" in w
    assert structure_warning(0.5, 0.45) is None
    (tmp_path / "metrics.csv").write_text("val_probe_dice,0.3\nval_all_foreground_dice,0.35\n")
    assert phase1_warnings(tmp_path / "metrics.csv") == [structure_warning(0.3, 0.35, "probe Dice")]
    assert phase1_warnings(tmp_path / "missing.csv") == []
    # the teacher's own channels decide, not the lagging online probe (PH2 32x32 seed 0: probe 0.15, channels 0.61)
    (tmp_path / "metrics.csv").write_text("val_probe_dice,0.1456\nval_best_assignment_dice,0.6086\n"
                                          "val_all_foreground_dice,0.4517\n")
    assert phase1_warnings(tmp_path / "metrics.csv") == []
    (tmp_path / "metrics.csv").write_text("val_probe_dice,0.9\nval_best_assignment_dice,0.40\n"
                                          "val_all_foreground_dice,0.4517\n")
    assert phase1_warnings(tmp_path / "metrics.csv") == [structure_warning(0.40, 0.4517)]
    # the evaluator computes the baseline before its handlers run and logs the warning when the probe loses
    teacher, probe, _, _ = build()
    evaluator = TeacherMonitorEvaluator("cpu", DataLoader(make_data(labels="real"), batch_size=2), teacher, probe,
                                        key_val_metric={"val_probe_dice": OutputAverage("probe_dice")})
    with caplog.at_level("WARNING"):
        evaluator.run()
    m = evaluator.state.metrics
    assert 0 < m["val_all_foreground_dice"] < 1
    expected = structure_warning(m["val_probe_dice"], m["val_all_foreground_dice"], "probe Dice")
    assert evaluator.state.warnings == ([expected] if expected else [])
    all_fg = [dict(d, label=torch.ones_like(d["label"])) for d in make_data(labels="real")]  # baseline 1: never beaten
    evaluator = TeacherMonitorEvaluator("cpu", DataLoader(all_fg, batch_size=2), teacher, probe,
                                        key_val_metric={"val_probe_dice": OutputAverage("probe_dice")})
    with caplog.at_level("WARNING"):
        evaluator.run()
    assert evaluator.state.metrics["val_all_foreground_dice"] == pytest.approx(1.0)
    assert len(evaluator.state.warnings) == 1 and evaluator.state.warnings[0] in caplog.text
    # with the best-assignment Dice among the metrics (the bundle's monitor), it is the one judged
    evaluator = TeacherMonitorEvaluator("cpu", DataLoader(make_data(labels="real"), batch_size=2), teacher, probe,
                                        key_val_metric={"val_probe_dice": OutputAverage("probe_dice")},
                                        additional_metrics={"val_best_assignment_dice":
                                                            BestAssignmentDice("assignment_dice")})
    evaluator.run()
    m = evaluator.state.metrics
    expected = structure_warning(m["val_best_assignment_dice"], m["val_all_foreground_dice"])
    assert evaluator.state.warnings == ([expected] if expected else [])


def test_best_assignment_is_chosen_over_the_whole_validation_set() -> None:
    """Two images whose foreground lands in different channels: choosing per batch (of one) would score both
    perfectly; one assignment for the whole set cannot."""
    y = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    y[..., :2, :] = 1
    onehot = torch.nn.functional.one_hot(y[:, 0], 2).movedim(-1, 1).float()
    a, b = onehot.flip(1), onehot  # foreground in channel 0, then in channel 1
    metric = BestAssignmentDice("assignment_dice")
    metric.reset()
    metric.update(assignment_dice(a, y))
    metric.update(assignment_dice(b, y))
    # each assignment: Dice 1 on one image, 0 on the other
    assert metric.compute() == pytest.approx(0.5)
    assert float(permutation_dice(torch.cat([a, b]), y.repeat(2, 1, 1, 1)).mean()) == pytest.approx(0.5)
    per_batch = [float(permutation_dice(a, y)), float(permutation_dice(b, y))]
    assert per_batch == [1.0, 1.0]  # what a per-batch choice would have reported


def test_shuffled_masks_belong_to_other_images() -> None:
    m = torch.arange(3.0).reshape(3, 1, 1, 1).expand(3, 2, 2, 2)
    assert shuffled_masks(m)[:, 0, 0, 0].tolist() == [2.0, 0.0, 1.0]
    one = torch.arange(4.0).reshape(1, 1, 2, 2)
    assert shuffled_masks(one).flatten().tolist() == [3.0, 2.0, 1.0, 0.0]


def test_reconstruction_gain_is_zero_when_the_image_pathway_ignores_the_mask() -> None:
    """The label-free measure: L_rec(blank or shuffled mask) - L_rec(predicted mask), same noise and t."""
    teacher, probe, _, _ = build()
    inner = teacher.image_net
    c = teacher.in_channels

    class IgnoreMask(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, inp: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.inner(torch.cat([inp[:, :c], torch.zeros_like(inp[:, c:])], 1), t)

    teacher.image_net = IgnoreMask()
    loader = DataLoader(make_data(labels="real"), batch_size=2)
    evaluator = TeacherMonitorEvaluator(
        "cpu", loader, teacher, probe, key_val_metric={"val_probe_dice": OutputAverage("probe_dice")},
        additional_metrics={"gain_blank": OutputAverage("rec_gain_blank"),
                            "gain_shuffled": OutputAverage("rec_gain_shuffled")},
    )
    evaluator.run()
    assert evaluator.state.metrics["gain_blank"] == pytest.approx(0.0, abs=1e-7)
    assert evaluator.state.metrics["gain_shuffled"] == pytest.approx(0.0, abs=1e-7)


class _PathwaySpy:
    """Record the inputs, timesteps and outputs of every call of the teacher's two backbones."""

    def __init__(self, teacher: DiffusionTeacher) -> None:
        self.calls: dict[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {"S": [], "G": []}
        for name, net in (("S", teacher.mask_net), ("G", teacher.image_net)):
            net.register_forward_hook(self._hook(name), with_kwargs=True)

    def _hook(self, name: str):
        def hook(module, args, kwargs, output):
            t = args[1] if len(args) > 1 else kwargs["timesteps"]
            self.calls[name].append((args[0].detach().clone(), t.detach().clone(), output.detach().clone()))

        return hook


def test_cycle_loss_equals_the_method_formula() -> None:
    """METHOD.md, "Phase 1", recomputed from what the two pathways received and returned in one iteration:
    ``G``'s condition is ``2 softmax(S(.)) - 1`` of ``S``'s output, ``t2`` is drawn afresh (not ``t1``), and
    ``L_cyc = mean((eps - eps_hat) ** 2)`` with ``eps`` recovered from ``x_t2 = sqrt(abar) x + sqrt(1 - abar) eps``."""
    teacher, _, opt, _ = build(with_probe=False)
    spy = _PathwaySpy(teacher)
    data = make_data(c=1, n=8, labels="none")
    loader = DataLoader(data, batch_size=8, shuffle=False)
    trainer = TeacherPretrainTrainer(device="cpu", max_epochs=1, train_data_loader=loader, teacher=teacher,
                                     optimizer=opt)
    torch.manual_seed(3)
    trainer.run()
    (s_in, t1, s_out), = spy.calls["S"]
    (g_in, t2, eps_hat), = spy.calls["G"]
    x = torch.stack([d["image"] for d in data])
    c, k = x.shape[1], teacher.num_classes
    assert torch.equal(s_in[:, k:], x)  # S sees concat[m_t, x]
    assert not torch.equal(t1, t2), "the reconstruction reuses the segmentation's noise level t1"
    x_t, cond = g_in[:, :c], g_in[:, c:]
    torch.testing.assert_close(cond, 2 * s_out.float().softmax(1) - 1, atol=1e-6, rtol=0)
    abar = teacher.scheduler.alphas_cumprod[t2].reshape(-1, 1, 1, 1).float()
    eps = (x_t - abar.sqrt() * x) / (1 - abar).sqrt()
    expected = ((eps - eps_hat) ** 2).mean()
    torch.testing.assert_close(trainer.state.output["loss_cyc"], expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "rows,use_teacher,numbers",
    [
        ("val_best_assignment_dice,0.40\nval_all_foreground_dice,0.4517\n", False,
         "0.4000 does not beat the all-foreground baseline 0.4517"),
        ("val_best_assignment_dice,0.4517\nval_all_foreground_dice,0.4517\n", False, "0.4517 does not beat"),
        ("val_best_assignment_dice,0.4600\nval_all_foreground_dice,0.4517\n", True,
         "0.4600 beats the all-foreground baseline 0.4517"),
        ("val_probe_dice,0.9\nval_best_assignment_dice,0.30\nval_all_foreground_dice,0.35\n", False,
         "best-assignment Dice 0.3000"),
        ("val_probe_dice,0.5\nval_all_foreground_dice,0.35\n", True, "probe Dice 0.5000 beats"),
    ],
    ids=["below", "equal", "above", "channels-not-probe", "probe-only"],
)
def test_phase1_gate_falls_back_unless_the_teacher_beats_the_all_foreground_baseline(
        tmp_path, rows: str, use_teacher: bool, numbers: str) -> None:
    from custom_components.engines.pretrain import phase1_gate, phase1_warnings

    (tmp_path / "metrics.csv").write_text(rows)
    use, reason = phase1_gate(tmp_path / "metrics.csv")
    assert use is use_teacher and numbers in reason
    assert ("fresh (untrained) teacher" in reason) is not use_teacher
    assert (phase1_warnings(tmp_path / "metrics.csv") == []) is use_teacher  # gate and warning agree


def test_phase1_gate_without_the_phase1_checks_names_the_file(tmp_path) -> None:
    from custom_components.engines.pretrain import phase1_gate
    from custom_components.errors import CheckpointError

    with pytest.raises(CheckpointError, match=r"phase1_gate: no phase-1 checks in .*missing.csv"):
        phase1_gate(tmp_path / "missing.csv")
    (tmp_path / "metrics.csv").write_text("val_best_assignment_dice,0.6\n")  # no baseline
    with pytest.raises(CheckpointError, match=r"set phase1_metrics to that file, or phase1_gate false"):
        phase1_gate(tmp_path / "metrics.csv")
