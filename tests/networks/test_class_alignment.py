"""Naming the phase-1 teacher's class channels with labelled data (``networks/class_alignment.py``)."""

from __future__ import annotations

import copy

import pytest
import torch

from custom_components.networks import (
    DiffusionTeacher,
    align_teacher_classes,
    best_class_order,
    channel_class_dice,
    permute_teacher_classes,
)


def _teacher(spatial_dims: int, k: int) -> DiffusionTeacher:
    torch.manual_seed(0)
    t = DiffusionTeacher(spatial_dims, 2, k, channels=[8, 16], norm_num_groups=4, num_train_timesteps=100,
                         infer_timestep=50)
    with torch.no_grad():  # the zero-initialised output convolution would make every channel equal
        for p in t.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return t


def test_channel_class_dice_by_hand():
    pred = torch.tensor([0, 0, 1, 1, 2, 2])
    lab = torch.tensor([1, 1, 0, 0, 0, 2])
    d = channel_class_dice(pred, lab, 3)
    assert d[0, 1] == pytest.approx(1.0) and d[1, 0] == pytest.approx(2 * 2 / 5) and d[2, 2] == pytest.approx(2 / 3)
    assert best_class_order(d) == [1, 0, 2]  # class 0 <- channel 1, class 1 <- channel 0


@pytest.mark.parametrize("spatial_dims,k", [(2, 2), (2, 4), (3, 4)])
def test_permutation_renames_channels_and_keeps_the_function(spatial_dims, k):
    teacher = _teacher(spatial_dims, k)
    renamed = copy.deepcopy(teacher)
    order = list(range(k))[::-1] if k == 2 else [2, 0, 3, 1]
    permute_teacher_classes(renamed, order)
    x = torch.randn(2, 2, *([8] * spatial_dims))
    teacher.eval(), renamed.eval()
    torch.testing.assert_close(renamed(x), teacher(x)[:, order])
    mask = torch.rand(2, k, *x.shape[2:]) * 2 - 1
    noise = torch.randn_like(x)
    old = teacher.reconstruct(x, mask, 30, noise)
    new = renamed.reconstruct(x, mask[:, order], 30, noise)
    torch.testing.assert_close(new.eps_hat, old.eps_hat)


def test_align_recovers_a_scrambled_partition():
    # labels are the teacher's own argmax with the channels renamed by a known permutation
    k = 4
    teacher = _teacher(2, k)
    teacher.eval()
    x = torch.randn(6, 2, 8, 8)
    channels = teacher(x).argmax(1, keepdim=True)
    counts = torch.bincount(channels.flatten(), minlength=k)
    assert (counts > 0).all(), "the tiny teacher must use every channel for this test"
    perm = torch.tensor([3, 1, 0, 2])  # label of channel c
    data = [{"image": xi, "label": perm[ci]} for xi, ci in zip(x, channels)]
    before = teacher(x)
    data = [data[:2], *data[2:]]  # a list entry (several crops of one image) counts like single items
    info = align_teacher_classes(teacher, data, batch_size=4)
    assert info["dice_after"] == pytest.approx(1.0) and info["dice_before"] < 1.0
    assert [int(perm[c]) for c in info["order"]] == list(range(k))
    torch.testing.assert_close(teacher(x).argmax(1, keepdim=True), perm[channels])
    torch.testing.assert_close(teacher(x), before[:, info["order"]])


def test_align_skips_unlabelled_items_and_needs_a_label():
    teacher = _teacher(2, 2)
    unlabelled = [{"image": torch.randn(2, 8, 8), "label": torch.full((1, 8, 8), -1)}]
    with pytest.raises(ValueError, match="no labelled image"):
        align_teacher_classes(teacher, unlabelled)
