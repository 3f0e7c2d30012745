"""Name the phase-1 teacher's unnamed class channels with the labelled data before co-training.

Phase 1 learns a partition of the image into ``K`` channels without any label, so which channel holds which
structure is arbitrary (METHOD.md: "foreground may land in either channel"); on a 4-class dataset the
all-background channel 0 of the conditioning can end up holding a lesion while the background lands in channel 1.
Phase 2 trains channel ``c`` as class ``c``. Without renaming, its first steps teach the student the teacher's
arbitrary channels through CPS and have the teacher unlearn its own partition. ``align_teacher_classes`` assigns
each class one channel (the assignment that maximises the summed Dice on the labelled images, Hungarian
algorithm) and permutes the teacher's weights so that the channel becomes that class: the mask pathway's output
and the image pathway's mask condition. The network is the same function up to the renaming.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import torch
import torch.nn as nn
from scipy.optimize import linear_sum_assignment

from .teacher import DiffusionTeacher

__all__ = ["align_teacher_classes", "best_class_order", "channel_class_dice", "permute_teacher_classes"]

logger = logging.getLogger(__name__)

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def channel_class_dice(pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Pooled Dice of every (channel, class) pair:
    ``D[c, k] = 2 |pred == c & label == k| / (|pred == c| + |label == k|)``.

    Args:
        pred: predicted channel indices (any shape).
        label: class indices, same shape.
        num_classes: ``K``.

    Returns:
        ``(K, K)`` float64 tensor, rows = channels, columns = classes (0 where both are empty).
    """
    p = pred.reshape(-1).long()
    y = label.reshape(-1).long()
    inter = torch.bincount(p * num_classes + y, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    np_, ny = inter.sum(1), inter.sum(0)
    denom = (np_[:, None] + ny[None, :]).double()
    return torch.where(denom > 0, 2 * inter.double() / denom.clamp_min(1), torch.zeros_like(denom))


def best_class_order(dice: torch.Tensor) -> list[int]:
    """The one-to-one channel-to-class assignment of maximal summed Dice.

    Args:
        dice: ``(K, K)`` matrix from :func:`channel_class_dice`.

    Returns:
        ``order`` with ``order[k]`` = the channel that becomes class ``k``.
    """
    rows, cols = linear_sum_assignment(dice.cpu().numpy(), maximize=True)
    order = [0] * dice.shape[0]
    for c, k in zip(rows.tolist(), cols.tolist()):
        order[k] = c
    return order


def _first_and_last_conv(net: nn.Module, what: str) -> tuple[nn.Module, nn.Module]:
    convs = [m for m in net.modules() if isinstance(m, _CONVS)]
    if not convs:
        raise TypeError(f"{what}: class channels can only be renamed in a convolutional backbone; found no "
                        "convolution.")
    return convs[0], convs[-1]


@torch.no_grad()
def permute_teacher_classes(teacher: DiffusionTeacher, order: Sequence[int]) -> None:
    """Rename the teacher's class channels in place: new channel ``k`` = old channel ``order[k]``.

    Permutes the output channels of the mask pathway's last convolution and the mask-condition input channels
    (``C .. C + K - 1`` of ``concat[x_t, m]``) of the image pathway's first convolution. The mask pathway's own
    mask input (the noised all-background mask) is left as trained, so ``segment`` returns the old logits with
    their channels reordered and ``reconstruct`` of a reordered mask equals the old one.

    Args:
        teacher: the ``DiffusionTeacher`` (weights changed in place).
        order: a permutation of ``0..K-1``.
    """
    k, c = teacher.num_classes, teacher.in_channels
    if sorted(int(i) for i in order) != list(range(k)):
        raise ValueError(f"order must be a permutation of 0..{k - 1}, got {list(order)}.")
    idx = torch.as_tensor([int(i) for i in order])
    _, out_conv = _first_and_last_conv(teacher.mask_net, "mask pathway")
    in_conv, _ = _first_and_last_conv(teacher.image_net, "image pathway")
    if out_conv.out_channels != k or in_conv.in_channels != c + k:
        raise TypeError(
            f"cannot rename the class channels: the mask pathway's last convolution has {out_conv.out_channels} "
            f"outputs and the image pathway's first convolution {in_conv.in_channels} inputs; expected {k} and {c + k}."
        )
    out_conv.weight.copy_(out_conv.weight[idx.to(out_conv.weight.device)])
    if out_conv.bias is not None:
        out_conv.bias.copy_(out_conv.bias[idx.to(out_conv.bias.device)])
    cols = torch.cat([torch.arange(c), c + idx]).to(in_conv.weight.device)
    in_conv.weight.copy_(in_conv.weight[:, cols])


@torch.no_grad()
def align_teacher_classes(
    teacher: DiffusionTeacher,
    data: Iterable,
    device: torch.device | str | None = None,
    batch_size: int = 8,
    image_key: str = "image",
    label_key: str = "label",
    ignore_value: int = -1,
) -> dict:
    """Assign the teacher's channels to the classes on labelled images and rename them (see the module docstring).

    The teacher segments every labelled image at its fixed inference ``t`` with its seeded noise; the (channel,
    class) Dice matrix is pooled over all labelled pixels and the best one-to-one assignment is applied with
    :func:`permute_teacher_classes`. The assignment and the mean foreground Dice before and after are logged.

    Args:
        teacher: the phase-1 teacher (changed in place).
        data: a dataset (or iterable) of dicts with ``image`` ``(C, *spatial)`` and ``label`` ``(1, *spatial)``
            tensors, preprocessed as in training (lists of such dicts and a loader's batched dicts also work).
        device: where to run (default: the teacher's device).
        batch_size: images per forward pass when ``data`` holds single items.
        image_key: image key.
        label_key: label key.
        ignore_value: label value of "no label" (such items are skipped).

    Returns:
        ``{"order", "dice_before", "dice_after", "dice_matrix"}`` (``order[k]`` = old channel of class ``k``).
    """
    k = teacher.num_classes
    device = device or next(teacher.parameters()).device
    was_training = teacher.training
    teacher.eval()
    preds, labels, pending = [], [], []

    def flush() -> None:
        if not pending:
            return
        x = torch.stack([torch.as_tensor(i[image_key]) for i in pending]).to(device).float()
        y = torch.stack([torch.as_tensor(i[label_key]) for i in pending])
        preds.append(teacher(x).argmax(1).cpu())
        labels.append(y[:, 0].cpu())
        pending.clear()

    for entry in data:
        items = []
        for item in entry if isinstance(entry, (list, tuple)) else [entry]:  # lists: crops with num_samples > 1
            img = torch.as_tensor(item[image_key])
            if img.ndim == teacher.spatial_dims + 2:  # a batch from a loader
                items += [{image_key: i, label_key: lab} for i, lab in zip(img, torch.as_tensor(item[label_key]))]
            else:
                items.append(item)
        for it in items:
            if bool((torch.as_tensor(it[label_key]) == ignore_value).any()):
                continue
            pending.append(it)
            if len(pending) >= batch_size:
                flush()
    flush()
    teacher.train(was_training)
    if not preds:
        raise ValueError("align_teacher_classes: no labelled image to name the teacher's class channels with.")
    pred = torch.cat([p.flatten() for p in preds])
    lab = torch.cat([y.flatten() for y in labels])
    dice = channel_class_dice(pred, lab, k)
    order = best_class_order(dice)
    before = float(dice.diagonal()[1:].mean())
    per_class = dice[order, list(range(k))]
    after = float(per_class[1:].mean())
    permute_teacher_classes(teacher, order)
    logger.info(
        "teacher class channels named on %d labelled pixels: class k <- phase-1 channel %s; mean foreground Dice "
        "of the channels %.4f before, %.4f after (per class %s)", lab.numel(), order, before, after,
        " ".join(f"{v:.4f}" for v in per_class.tolist()),
    )
    return {"order": order, "dice_before": before, "dice_after": after, "dice_matrix": dice.tolist()}
