"""``custom_components.runtime.distributed``: DDP-wrapped backbones keep the checkpoint format and average gradients."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from custom_components.networks import DiffusionTeacher
from custom_components.networks.teacher import make_noise
from custom_components.runtime import distributed as D


def _teacher(seed: int = 0) -> DiffusionTeacher:
    torch.manual_seed(seed)
    return DiffusionTeacher(2, 1, 2, channels=(4, 8), norm_num_groups=2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def single_process_group(monkeypatch):
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    device = D.init_distributed(torch.device("cpu"))
    yield device
    dist.destroy_process_group()


def _loss(teacher: DiffusionTeacher, x: torch.Tensor) -> torch.Tensor:
    noise = make_noise((x.shape[0], 2, *x.shape[2:]), 1, x.device, x.dtype)
    logits = teacher.segment(x, 300, noise)
    rec = teacher.reconstruct(x, 2 * logits.softmax(1) - 1, 200, make_noise(x.shape, 2, x.device, x.dtype))
    return rec.loss.mean()


def test_wrap_is_noop_without_process_group():
    t = _teacher()
    assert D.wrap_backbones(t) is t and not isinstance(t.mask_net, torch.nn.parallel.DistributedDataParallel)
    assert D.rank() == 0 and D.is_rank_zero()


def test_init_distributed_outside_torchrun_names_the_problem(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(RuntimeError, match=r"distributed.py: environment variables .*RANK.*torchrun"):
        D.init_distributed(torch.device("cpu"))


def test_init_distributed_rejects_unknown_backend(single_process_group):
    with pytest.raises(ValueError, match="backend must be 'nccl' or 'gloo'"):
        D.init_distributed(torch.device("cpu"), backend="mpi")


def test_rank_before_during_and_after_a_process_group(monkeypatch):
    assert D.rank() == 0
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    D.init_distributed(torch.device("cpu"))
    assert D.rank() == 0 and D.is_rank_zero()
    dist.destroy_process_group()
    assert D.rank() == 0 and D.is_rank_zero()  # idist keeps the destroyed group: rank() must not ask it


def test_wrapped_state_dict_has_single_process_keys(single_process_group):
    plain = _teacher(0)
    wrapped = D.wrap_backbones(_teacher(0))
    assert isinstance(wrapped.mask_net, D.StateDictTransparentDDP)
    assert isinstance(wrapped.image_net, D.StateDictTransparentDDP)
    sd = wrapped.state_dict()
    assert list(sd) == list(plain.state_dict())
    assert not [k for k in sd if "module." in k]
    # a single-process checkpoint loads into the wrapped model and vice versa (strict)
    other = _teacher(1)
    wrapped.load_state_dict(other.state_dict())
    assert torch.equal(D.unwrap_module(wrapped.mask_net).out[2].conv.weight, other.mask_net.out[2].conv.weight)
    plain.load_state_dict(wrapped.state_dict())
    with pytest.raises(AttributeError, match="has no backbone 'nope'"):
        D.wrap_backbones(_teacher(), ["nope"])


def test_rank_zero_handlers_keeps_all_on_rank_zero():
    hs = [object(), 1, "a"]
    assert D.rank_zero_handlers(hs, keep=(int,)) == hs


def _worker(rank: int, world: int, port: int, x: torch.Tensor, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    D.init_distributed(torch.device("cpu"))
    t = D.wrap_backbones(_teacher(rank))  # different init per rank: DDP must broadcast rank 0's weights
    x = torch.from_numpy(x)
    half = x.shape[0] // world
    _loss(t, x[rank * half : (rank + 1) * half]).backward()
    # numpy: no shared memory
    grads = {k.replace(".module.", "."): p.grad.numpy().copy() for k, p in t.named_parameters() if p.grad is not None}
    hooks = D.rank_zero_handlers([1, "a"], keep=(int,))
    queue.put((rank, grads, list(t.state_dict())[:3], hooks))
    dist.barrier()
    dist.destroy_process_group()


def test_two_processes_average_gradients_like_one_full_batch():
    x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(0)).numpy()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, x, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict((r, (g, keys, h)) for r, g, keys, h in (queue.get(timeout=120) for _ in procs))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    ref = _teacher(0)
    x = torch.from_numpy(x)
    # each rank's loss is the mean over its half; DDP averages, so the reference is the mean of the half-losses
    (0.5 * (_loss(ref, x[:2]) + _loss(ref, x[2:]))).backward()
    g0, g1 = results[0][0], results[1][0]
    assert set(g0) == {k for k, _ in ref.named_parameters()}
    for k, p in ref.named_parameters():
        torch.testing.assert_close(torch.from_numpy(g0[k]), p.grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(torch.from_numpy(g1[k]), torch.from_numpy(g0[k]))
    assert not [k for k in results[0][1] if "module." in k]
    assert results[0][2] == [1, "a"] and results[1][2] == [1]
