"""Paired labelled / unlabelled streams for semi-supervised training."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from typing import Any

from torch.utils.data.distributed import DistributedSampler

__all__ = ["PairedLoader"]


class PairedLoader:
    """Zip a labelled and an unlabelled loader into ``{"labeled": batch, "unlabeled": batch}`` items.

    An epoch is as long as the longer stream; the shorter one cycles (it is re-iterated, and so reshuffled,
    whenever it runs out). ``set_epoch`` forwards to the ``DistributedSampler`` of either loader.

    Args:
        labeled: loader of labelled batches (image + label).
        unlabeled: loader of unlabelled batches (image only).
        length: ``"max"`` (default; the shorter stream cycles), ``"min"``, ``"labeled"``, ``"unlabeled"`` or an int.
        labeled_key: the key of the labelled batch in each item.
        unlabeled_key: the key of the unlabelled batch in each item.
    """

    def __init__(
        self,
        labeled: Iterable,
        unlabeled: Iterable,
        length: str | int = "max",
        labeled_key: str = "labeled",
        unlabeled_key: str = "unlabeled",
    ) -> None:
        for name, loader in (("labeled", labeled), ("unlabeled", unlabeled)):
            if not isinstance(loader, Sized):
                raise TypeError(f"the {name} loader must have a length.")
            if len(loader) == 0:
                raise ValueError(
                    f"the {name} stream is empty: the datalist's '{name}' split has no entries "
                    "(or fewer entries than one batch with drop_last=True)."
                )
        self.labeled = labeled
        self.unlabeled = unlabeled
        self.labeled_key = labeled_key
        self.unlabeled_key = unlabeled_key
        n_l, n_u = len(labeled), len(unlabeled)  # type: ignore[arg-type]
        if isinstance(length, int):
            if length < 1:
                raise ValueError(f"length must be >= 1, got {length}.")
            self.length = length
        else:
            choices = {"max": max(n_l, n_u), "min": min(n_l, n_u), "labeled": n_l, "unlabeled": n_u}
            if length not in choices:
                raise ValueError(f"length must be an int or one of {sorted(choices)}, got {length!r}.")
            self.length = choices[length]

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to both loaders' ``DistributedSampler`` (if any).

        Args:
            epoch: the epoch number.
        """
        for loader in (self.labeled, self.unlabeled):
            sampler = getattr(loader, "sampler", None)
            if isinstance(sampler, DistributedSampler):
                sampler.set_epoch(epoch)

    @staticmethod
    def _cycle(loader: Iterable) -> Iterator[Any]:
        while True:
            yielded = False
            for batch in loader:
                yielded = True
                yield batch
            if not yielded:
                raise RuntimeError("a loader yielded no batch")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        it_l, it_u = self._cycle(self.labeled), self._cycle(self.unlabeled)
        for _ in range(self.length):
            yield {self.labeled_key: next(it_l), self.unlabeled_key: next(it_u)}
