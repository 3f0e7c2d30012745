"""``MaskPathwaySegmenter.from_teacher``: the validation views of the co-trained networks."""

from __future__ import annotations

import torch

from custom_components.networks import DiffusionTeacher, MaskPathwaySegmenter


def test_view_predicts_like_the_explicit_constructor_and_shares_the_weights():
    torch.manual_seed(0)
    teacher = DiffusionTeacher(2, 1, 2, channels=(4, 8), norm_num_groups=4, num_train_timesteps=100,
                               infer_timestep=37, infer_seed=5).eval()
    with torch.no_grad():  # MONAI zero-initialises the output convolution: make the output depend on the input
        for prm in teacher.mask_net.parameters():
            prm.add_(0.3 * torch.randn_like(prm))
    view = MaskPathwaySegmenter.from_teacher(teacher).eval()
    explicit = MaskPathwaySegmenter(2, 1, 2, channels=(4, 8), mask_net=teacher.mask_net, num_train_timesteps=100,
                                    timestep=37, seed=5).eval()
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(view(x), explicit(x))
        other = MaskPathwaySegmenter(2, 1, 2, channels=(4, 8), mask_net=teacher.mask_net, num_train_timesteps=100,
                                     timestep=90, seed=6).eval()
        assert not torch.equal(view(x), other(x))  # the teacher's t and seed are what the view uses
    assert view.mask_net is teacher.mask_net and view.num_levels == 2 and view.timestep == 37 and view.seed == 5
