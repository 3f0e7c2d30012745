"""The methods the runner can train: a small registry, one entry per method.

A method names the bundle that trains it, the bundle ids that make it that method, whether phase 1
(``teacher_pretrain``) runs before it, and, for the fully supervised upper bound, the labelled ratio it always
uses. The runner, the ``--methods`` choices, the order of the results table and the order in which runs start
side by side (``cost``) all read this registry, so adding a variant is one ``register(Method(...))`` call::

    register(Method("cps_pretrained", bundle="cotrain", settings={"rounds": 0}, pretrain=True, cost=3,
                    description="plain CPS (R = 0) started from the phase-1 teacher"))

A variant that needs other training logic adds one small trainer subclass and points the bundle at it through
``settings`` (``{"train#trainer#_target_": "my_package.MyTrainer"}``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_ROUND_MODE", "DEFAULT_ROUNDS", "METHODS", "Method", "get_method", "register", "run_name"]

DEFAULT_ROUNDS = 3
DEFAULT_ROUND_MODE = "independent"


@dataclass(frozen=True)
class Method:
    """One trainable method.

    Args:
        name: name on the command line, in folders and in tables.
        bundle: the bundle of its (last) training phase: ``supervised`` or ``cotrain``.
        settings: bundle ids that define the method (stacked after the profile, before user overrides).
        pretrain: run phase 1 first (shared per seed) and start from its ``teacher.pt``; without it the cotrain
            bundle gets ``teacher_ckpt=""``.
        diffusion: the runner's ``--rounds`` / ``--round-mode`` / ``--no-pretrain`` apply (and mark the folder name).
        fixed_ratio: train at this labelled ratio whatever ``--ratios`` says (the upper bound: 1.0).
        cost: relative cost of one run; with ``--jobs`` the costliest runs start first.
        description: one line for ``--help`` and the docs.
    """

    name: str
    bundle: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    pretrain: bool = False
    diffusion: bool = False
    fixed_ratio: float | None = None
    cost: int = 1
    description: str = ""

    def __post_init__(self) -> None:
        if self.bundle not in ("supervised", "cotrain"):
            raise ValueError(f"method {self.name!r}: bundle must be 'supervised' or 'cotrain', got {self.bundle!r}.")
        if self.pretrain and self.bundle != "cotrain":
            raise ValueError(f"method {self.name!r}: phase 1 only precedes the cotrain bundle.")

    def phases(self, pretrain: bool = True) -> tuple[str, ...]:
        """The bundles it trains, in order (``pretrain``: the runner's ``--no-pretrain`` for ``diffusion`` methods)."""
        first = ("teacher_pretrain",) if self.pretrain and (pretrain or not self.diffusion) else ()
        return (*first, self.bundle)

    def bundle_settings(self, rounds: int = DEFAULT_ROUNDS, round_mode: str = DEFAULT_ROUND_MODE) -> dict[str, Any]:
        """The ids the method passes to its bundle (``teacher_ckpt`` is set by the runner when phase 1 runs).

        Args:
            rounds: ``--rounds`` (used by ``diffusion`` methods).
            round_mode: ``--round-mode`` (used by ``diffusion`` methods).
        """
        out: dict[str, Any] = {"teacher_ckpt": ""} if self.bundle == "cotrain" else {}
        out.update(self.settings)
        if self.diffusion:
            out.update({"rounds": int(rounds), "round_mode": round_mode})
        return out


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to the registry (the table order is the registration order).

    Raises:
        ValueError: a method of that name exists.
    """
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is already registered.")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The registered method ``name``.

    Raises:
        KeyError: naming the registered methods.
    """
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; registered: {sorted(METHODS)}.") from None


def run_name(method: Method, rounds: int = DEFAULT_ROUNDS, round_mode: str = DEFAULT_ROUND_MODE,
             pretrain: bool = True) -> str:
    """Folder / table name of a run: the method, with the ablation settings that differ from the default.

    Args:
        method: the method.
        rounds: diffusion rounds ``R``.
        round_mode: ``independent`` or ``chained``.
        pretrain: whether phase 1 runs (``--no-pretrain`` clears it).
    """
    if not method.diffusion:
        return method.name
    name = method.name
    if rounds != DEFAULT_ROUNDS:
        name += f"_R{rounds}"
    if round_mode != DEFAULT_ROUND_MODE:
        name += f"_{round_mode}"
    if method.pretrain and not pretrain:
        name += "_nopretrain"
    return name


register(Method("supervised", bundle="supervised", cost=1,
                description="the supervised bundle on the labelled subset"))
register(Method("cps", bundle="cotrain", settings={"rounds": 0}, cost=2,
                description="the cotrain bundle without phase 1 and with R = 0 (plain cross pseudo-supervision)"))
register(Method("full", bundle="cotrain", pretrain=True, diffusion=True, cost=3,
                description="phase 1, then co-training with R diffusion rounds (the method of the paper)"))
register(Method("upper", bundle="supervised", fixed_ratio=1.0, cost=1,
                description="the supervised bundle on every training case (fully supervised upper bound)"))
