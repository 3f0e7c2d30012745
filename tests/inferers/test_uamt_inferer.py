"""The la_uamt sliding-window inferer: window positions, padding, averaging, agreement with MONAI."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer

from custom_components.inferers import UAMTSlidingWindowInferer, window_starts


def test_window_starts_clip_the_last_window() -> None:
    assert window_starts(10, 10, 4) == [0]
    assert window_starts(20, 8, 4) == [0, 4, 8, 12]
    assert window_starts(21, 8, 4) == [0, 4, 8, 12, 13]  # ceil(13/4)+1 = 5, last clipped to 21-8
    assert window_starts(180, 112, 18) == [0, 18, 36, 54, 68]  # an LA-sized axis
    with pytest.raises(ValueError, match="smaller than the window"):
        window_starts(5, 8, 4)


def test_windows_seen_by_network_and_padding() -> None:
    inf = UAMTSlidingWindowInferer(roi_size=(8, 6, 4), strides=(3, 3, 2), sw_batch_size=4)
    x = torch.zeros(1, 1, 10, 4, 5)  # second axis smaller than the window: padded 1 before, 1 after
    assert inf.pad_sizes((10, 4, 5)) == [(0, 0), (1, 1), (0, 0)]
    seen = []

    def net(w: torch.Tensor) -> torch.Tensor:
        seen.append(w.shape[0])
        return torch.zeros(w.shape[0], 2, *w.shape[2:])

    out = inf(x, net)
    slices = inf.window_slices((10, 6, 5))
    starts = [tuple(s.start for s in sl) for sl in slices]
    assert starts == [(x0, 0, z) for x0 in (0, 2) for z in (0, 1)]
    assert sum(seen) == 4 and out.shape == (1, 2, 10, 4, 5)


def test_constant_network_gives_constant() -> None:
    probs = torch.tensor([0.2, 0.7, 0.1])
    inf = UAMTSlidingWindowInferer(roi_size=(6, 6, 4), strides=(2, 3, 1), apply_softmax=False, sw_batch_size=3)
    x = torch.randn(2, 1, 9, 5, 7)

    def net(w: torch.Tensor) -> torch.Tensor:
        return probs.view(1, 3, 1, 1, 1).expand(w.shape[0], 3, *w.shape[2:]).clone()

    out = inf(x, net)
    assert out.shape == (2, 3, 9, 5, 7)
    assert torch.allclose(out, probs.view(1, 3, 1, 1, 1).expand_as(out), atol=1e-6)
    # with softmax (default) constant logits give their softmax everywhere
    out2 = UAMTSlidingWindowInferer(roi_size=(6, 6, 4), strides=(2, 3, 1))(x, net)
    assert torch.allclose(out2, torch.softmax(probs, 0).view(1, 3, 1, 1, 1).expand_as(out2), atol=1e-6)


@pytest.mark.parametrize(
    "roi,strides,shape",
    [((8, 8, 4), (4, 4, 2), (1, 2, 13, 11, 9)), ((8, 8), (2, 4), (2, 1, 17, 6))],
)
def test_matches_monai_sliding_window_when_strides_coincide(roi, strides, shape) -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv3d if len(roi) == 3 else torch.nn.Conv2d
    net = conv(shape[1], 3, 3, padding=1)
    x = torch.randn(*shape)
    overlap = [1 - s / r for s, r in zip(strides, roi)]
    with torch.no_grad():
        ref = SlidingWindowInferer(roi_size=roi, overlap=overlap, mode="constant", sw_batch_size=2)(
            x, lambda w: torch.softmax(net(w), 1)
        )
        out = UAMTSlidingWindowInferer(roi_size=roi, strides=strides, sw_batch_size=2)(x, net)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-5)


def test_keeps_metadata_and_rejects_bad_input() -> None:
    inf = UAMTSlidingWindowInferer(roi_size=(4, 4), strides=(2, 2))
    x = MetaTensor(torch.zeros(1, 1, 6, 6), meta={"filename_or_obj": "a.png"})
    out = inf(x, lambda w: torch.zeros(w.shape[0], 2, 4, 4))
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "a.png"
    with pytest.raises(ValueError, match="inputs must be a tensor of shape"):
        inf(torch.zeros(1, 6, 6), lambda w: w)
    with pytest.raises(ValueError, match="the network must return"):
        inf(torch.zeros(1, 1, 6, 6), lambda w: torch.zeros(w.shape[0], 2, 3, 3))
    with pytest.raises(ValueError, match="roi_size and strides must both have"):
        UAMTSlidingWindowInferer(roi_size=(4, 4), strides=(2, 2, 2))
