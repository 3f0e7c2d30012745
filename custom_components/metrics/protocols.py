"""Named evaluation protocols: ``clean`` (default), ``paper2d`` and ``la_uamt``.

A protocol fixes everything that changes a reported number: the resolution at which masks are compared,
the distance unit, how HD95 and ASD combine the two directed surface-distance sets, whether Dice and
Jaccard are also pooled over the whole test set, optional largest-connected-component post-processing, and
what is returned when a prediction or a reference is empty. Its ``name`` is written into every output row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

__all__ = ["EvaluationProtocol", "PROTOCOLS", "get_protocol", "EMPTY_CASES_DOC"]

EMPTY_CASES_DOC = (
    "per class: prediction and reference both empty -> every metric NaN (left out of mean/std, flag "
    "'empty_both'); exactly one empty -> Dice 0, Jaccard 0, HD95 and ASD = empty_distance (flag "
    "'empty_pred' or 'empty_ref'); empty_distance 'max' = the image diagonal in the protocol's distance "
    "unit (an upper bound of any distance in the image), 'nan' = NaN (left out of mean/std)"
)

_HD95_MODES = ("max_directed", "pooled")
_ASD_MODES = ("symmetric", "pred_to_ref")
_EMPTY_MODES = ("max", "nan")


@dataclass(frozen=True)
class EvaluationProtocol:
    """How per-case segmentation metrics are computed and summarised.

    Args:
        name: the name written into every output (``clean``, ``paper2d``, ``la_uamt`` or a custom one).
        resize: spatial size both masks are resized to (nearest-exact) before scoring, or ``None`` for native.
        pooled: also report Dice and Jaccard pooled over all cases (sum of intersections over sum of sizes).
        use_spacing: measure distances in mm with the voxel spacing when it is known (else in voxels).
        hd95: ``"max_directed"`` = max of the two directed 95th percentiles (MONAI
            ``compute_hausdorff_distance``); ``"pooled"`` = 95th percentile of both directions concatenated
            (medpy ``hd95``).
        asd: ``"symmetric"`` = mean of both directions concatenated (MONAI
            ``compute_average_surface_distance(symmetric=True)``); ``"pred_to_ref"`` = mean of the distances
            from the prediction surface to the reference surface (medpy ``asd(result, reference)``).
        largest_cc: keep only the largest connected component (full connectivity) of every foreground class
            of the prediction before scoring.
        empty_distance: distance returned when exactly one of prediction and reference is empty: ``"max"``
            (the image diagonal) or ``"nan"``.
        description: one line for reports.
    """

    name: str
    resize: tuple[int, ...] | None = None
    pooled: bool = False
    use_spacing: bool = True
    hd95: str = "max_directed"
    asd: str = "symmetric"
    largest_cc: bool = False
    empty_distance: str = "max"
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"metrics/protocols.py: protocol name must be a non-empty string, got {self.name!r}.")
        if self.hd95 not in _HD95_MODES:
            raise ValueError(f"metrics/protocols.py: hd95 must be one of {_HD95_MODES}, got {self.hd95!r}.")
        if self.asd not in _ASD_MODES:
            raise ValueError(f"metrics/protocols.py: asd must be one of {_ASD_MODES}, got {self.asd!r}.")
        if self.empty_distance not in _EMPTY_MODES:
            raise ValueError(
                f"metrics/protocols.py: empty_distance must be one of {_EMPTY_MODES}, got {self.empty_distance!r}."
            )
        if self.resize is not None:
            size = tuple(int(s) for s in self.resize)
            if len(size) not in (2, 3) or min(size) < 1:
                raise ValueError(
                    f"metrics/protocols.py: resize must be 2 or 3 positive ints or None, got {self.resize!r}."
                )
            object.__setattr__(self, "resize", size)

    def distance_unit(self, spacing: Any) -> str:
        """Unit of the distances for a case with this ``spacing`` (``"mm"`` or ``"voxel"``).

        Args:
            spacing: the case's voxel spacing, or ``None`` when unknown.
        """
        return "mm" if (self.use_spacing and self.resize is None and spacing is not None) else "voxel"

    def to_dict(self) -> dict[str, Any]:
        """The protocol's fields as a JSON-serialisable dictionary."""
        out = asdict(self)
        out["resize"] = list(self.resize) if self.resize is not None else None
        out["empty_cases"] = EMPTY_CASES_DOC
        return out


PROTOCOLS: Mapping[str, EvaluationProtocol] = {
    "clean": EvaluationProtocol(
        name="clean",
        description="native resolution, per-case mean/std, distances in mm where spacing is known, "
        "HD95 = max of directed 95th percentiles, symmetric ASD (MONAI conventions)",
    ),
    "paper2d": EvaluationProtocol(
        name="paper2d",
        resize=(128, 128),
        pooled=True,
        use_spacing=False,
        description="2D resized to 128x128, Dice/Jaccard pooled over all test pixels, per-image HD95 and "
        "symmetric ASD in pixels",
    ),
    "la_uamt": EvaluationProtocol(
        name="la_uamt",
        use_spacing=False,
        hd95="pooled",
        asd="pred_to_ref",
        description="UA-MT LA benchmark: per-case Dice/Jaccard/HD95/ASD in voxels with medpy conventions "
        "(HD95 over pooled surface distances of both directions, ASD prediction->reference)",
    ),
}


def get_protocol(protocol: str | EvaluationProtocol = "clean", **overrides: Any) -> EvaluationProtocol:
    """Return a named protocol, optionally with some fields replaced (e.g. ``largest_cc=True``).

    Args:
        protocol: a name in ``PROTOCOLS`` or an ``EvaluationProtocol`` (returned as is unless overridden).
        overrides: fields of ``EvaluationProtocol`` to replace; the name is kept.

    Raises:
        ValueError: for an unknown protocol name or field.
    """
    if isinstance(protocol, EvaluationProtocol):
        base = protocol
    elif isinstance(protocol, str) and protocol in PROTOCOLS:
        base = PROTOCOLS[protocol]
    else:
        raise ValueError(
            f"metrics/protocols.py: unknown protocol {protocol!r}; expected one of {sorted(PROTOCOLS)} "
            "or an EvaluationProtocol."
        )
    if not overrides:
        return base
    unknown = sorted(set(overrides) - set(EvaluationProtocol.__dataclass_fields__))
    if unknown:
        raise ValueError(f"metrics/protocols.py: unknown protocol field(s) {unknown}.")
    return replace(base, **overrides)
