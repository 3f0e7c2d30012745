"""How the ``R`` diffusion rounds condition on the previous mask (METHOD.md, "R diffusion rounds")."""

from __future__ import annotations

from monai.utils import StrEnum

__all__ = ["RoundMode"]


class RoundMode(StrEnum):
    """``independent`` (default): every round conditions on the original ``P_T``; ``chained``: round ``j``
    conditions on ``P~_(j-1)``. A ``str`` enum, so configs keep passing the plain strings."""

    INDEPENDENT = "independent"
    CHAINED = "chained"

    @classmethod
    def parse(cls, value: str | RoundMode) -> RoundMode:
        """The member named by ``value``.

        Args:
            value: ``"independent"``, ``"chained"`` or a member.

        Raises:
            ValueError: for any other value, naming the accepted ones.
        """
        try:
            return cls(value)
        except ValueError:
            choices = " or ".join(repr(m.value) for m in cls)
            raise ValueError(f"round_mode must be {choices}, got {value!r}.") from None
