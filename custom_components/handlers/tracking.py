"""Hand a bundle's multi-term loss output to the experiment-tracking handler MONAI adds with ``--tracking``.

``python -m monai.bundle run ... --tracking mlflow`` appends MONAI's ``MLFlowHandler`` to ``train#handlers`` with
``output_transform=from_engine(['loss'], first=True)``, which expects a decollated list of dicts; the diffusion
trainers output one dict of named loss terms. The training configs call :func:`use_output_transform` first in
``run`` (in ``initialize`` it would build the handlers before ``multi_gpu_train.json`` wraps the networks) with the
transform their ``StatsHandler`` and ``TensorBoardStatsHandler`` use (``loss_terms``), so MLflow logs every term
as a named scalar.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["use_output_transform"]


def use_output_transform(handlers: Iterable[Any], output_transform: Callable[[Any], Any]) -> int:
    """Set ``output_transform`` of every ``monai.handlers.MLFlowHandler`` among ``handlers``.

    Args:
        handlers: the trainer's handlers (``@train#handlers``).
        output_transform: ``engine.state.output -> {name: float}``.

    Returns:
        how many handlers were changed (0 without ``--tracking``).
    """
    from monai.handlers import MLFlowHandler

    changed = 0
    for h in handlers:
        if isinstance(h, MLFlowHandler):
            h.output_transform = output_transform
            changed += 1
    return changed
