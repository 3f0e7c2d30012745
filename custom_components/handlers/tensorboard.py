"""One TensorBoard writer per bundle run that creates its event file on the first write.

``torch.utils.tensorboard.SummaryWriter`` opens an event file when it is constructed, so every
``ConfigWorkflow.initialize`` (a ``check_properties`` call, a failed run) left an empty file behind, one per
``TensorBoardStatsHandler``. The bundles instead share one :class:`LazySummaryWriter` (top-level id
``summary_writer``) between the trainer's and the validator's ``TensorBoardStatsHandler``: one event file per run,
under ``<bundle_root>/eval/tensorboard/``, written only once there is something to write, and closed at exit.
"""

from __future__ import annotations

import atexit

from torch.utils.tensorboard import SummaryWriter

__all__ = ["LazySummaryWriter"]


class LazySummaryWriter(SummaryWriter):
    """A ``SummaryWriter`` whose event file (and folder) is created by the first ``add_*`` call, not by ``__init__``.

    Takes the arguments of ``torch.utils.tensorboard.SummaryWriter``.
    """

    def __init__(self, *args, **kwargs) -> None:
        self._defer = True
        super().__init__(*args, **kwargs)
        self._defer = False

    def _get_file_writer(self):  # noqa: ANN202 - SummaryWriter's private hook, same signature
        if self._defer:
            return None
        if self.all_writers is None:
            atexit.register(self.close)
        return super()._get_file_writer()
