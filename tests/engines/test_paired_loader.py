"""Tests for ``custom_components.data.loaders.PairedLoader``: the labelled and unlabelled streams of phase 2."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from custom_components.data.loaders import PairedLoader


class CountingLoader:
    """A sized iterable of integer batches that counts how often it is (re-)iterated."""

    def __init__(self, n: int, tag: str) -> None:
        self.items = [f"{tag}{i}" for i in range(n)]
        self.iterations = 0

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        self.iterations += 1
        return iter(self.items)


def test_epoch_length_is_the_longer_stream_and_the_shorter_cycles() -> None:
    lab, unl = CountingLoader(2, "l"), CountingLoader(5, "u")
    loader = PairedLoader(lab, unl)
    assert len(loader) == 5
    items = list(loader)
    assert [it["unlabeled"] for it in items] == ["u0", "u1", "u2", "u3", "u4"]
    assert [it["labeled"] for it in items] == ["l0", "l1", "l0", "l1", "l0"]
    assert lab.iterations == 3  # re-iterated each time it ran out
    assert unl.iterations == 1


def test_longer_labelled_stream_cycles_the_unlabelled_one() -> None:
    loader = PairedLoader(CountingLoader(3, "l"), CountingLoader(1, "u"))
    items = list(loader)
    assert len(items) == 3
    assert [it["unlabeled"] for it in items] == ["u0", "u0", "u0"]


def test_shorter_stream_is_reshuffled_when_it_cycles() -> None:
    data = [{"image": torch.tensor([float(i)])} for i in range(4)]
    lab = DataLoader(data, batch_size=1, shuffle=True, generator=torch.Generator().manual_seed(0))
    unl = DataLoader(data * 10, batch_size=1)
    items = list(PairedLoader(lab, unl))
    assert len(items) == 40
    passes = [tuple(int(it["labeled"]["image"]) for it in items[i : i + 4]) for i in range(0, 40, 4)]
    assert all(sorted(p) == [0, 1, 2, 3] for p in passes)  # each pass is a full permutation
    assert len(set(passes)) > 1  # and the passes are not all in the same order


@pytest.mark.parametrize(
    "length,expected", [("min", 2), ("max", 5), ("labeled", 2), ("unlabeled", 5), (7, 7), (1, 1)]
)
def test_length_options(length, expected: int) -> None:
    loader = PairedLoader(CountingLoader(2, "l"), CountingLoader(5, "u"), length=length)
    assert len(loader) == expected
    assert len(list(loader)) == expected


def test_a_new_iteration_restarts_both_streams() -> None:
    loader = PairedLoader(CountingLoader(2, "l"), CountingLoader(3, "u"), length="min")
    first = list(loader)
    second = list(loader)
    assert first == second == [{"labeled": "l0", "unlabeled": "u0"}, {"labeled": "l1", "unlabeled": "u1"}]


def test_custom_keys() -> None:
    loader = PairedLoader(CountingLoader(1, "l"), CountingLoader(1, "u"), labeled_key="a", unlabeled_key="b")
    assert list(loader) == [{"a": "l0", "b": "u0"}]


@pytest.mark.parametrize("empty", ["labeled", "unlabeled"])
def test_empty_stream_raises_naming_the_split(empty: str) -> None:
    streams = {"labeled": CountingLoader(2, "l"), "unlabeled": CountingLoader(2, "u")}
    streams[empty] = CountingLoader(0, "x")
    with pytest.raises(ValueError, match=rf"the {empty} stream is empty: the datalist's '{empty}' split has no "
                                         r"entries"):
        PairedLoader(streams["labeled"], streams["unlabeled"])


def test_drop_last_leaving_no_batch_counts_as_empty() -> None:
    lab = DataLoader([{"x": torch.zeros(1)}], batch_size=2, drop_last=True)
    with pytest.raises(ValueError, match="the labeled stream is empty"):
        PairedLoader(lab, CountingLoader(2, "u"))


@pytest.mark.parametrize("length,msg", [(0, "length must be >= 1, got 0"),
                                        ("longest", "length must be an int or one of")])
def test_invalid_length_rejected(length, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        PairedLoader(CountingLoader(1, "l"), CountingLoader(1, "u"), length=length)


def test_unsized_loader_rejected() -> None:
    with pytest.raises(TypeError, match="the unlabeled loader must have a length"):
        PairedLoader(CountingLoader(1, "l"), (x for x in range(3)))
