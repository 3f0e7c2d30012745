"""The phases and the methods the runner can train: one declaration of each.

``PHASES`` are the bundles a run trains (each with its own iteration budget in the profiles); the runner, the
budgets and the methods read them from here. A method names the bundle of its (last) phase, the override files it
stacks on that bundle's ``train.json`` (``configs/methods/*.json``), the bundle ids that make it that method,
whether phase 1 (``teacher_pretrain``) runs before it, and, for the fully supervised upper bound, the labelled
ratio it always uses. The runner, the ``--methods`` choices, the order of the results table and the order in
which runs start side by side (``cost``) all read this registry, so adding a variant is one
``register(Method(...))`` call::

    register(Method("cps_pretrained", bundle="cotrain", settings={"rounds": 0}, pretrain=True, cost=3,
                    description="plain CPS (R = 0) started from the phase-1 teacher"))

A method with other training logic is one :class:`~custom_components.engines.SemiSupervisedTrainer` subclass,
trained by the supervised bundle with the semi-supervised wiring (``methods/semi_supervised.json``)::

    register(Method("my_method", bundle="supervised", overrides=SEMI_SUPERVISED,
                    settings={"train#trainer#_target_": "my_package.MyTrainer"}))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_ROUND_MODE", "DEFAULT_ROUNDS", "METHODS", "PHASES", "PRETRAIN_PHASE", "SEMI_SUPERVISED",
           "Method", "get_method", "register", "run_name"]

DEFAULT_ROUNDS = 1
DEFAULT_ROUND_MODE = "independent"

#: the bundles a run trains, in the order a run can train them (phase 1 only before ``cotrain``)
PHASES = ("supervised", "teacher_pretrain", "cotrain")
PRETRAIN_PHASE = "teacher_pretrain"
#: the override file that turns the supervised bundle into a semi-supervised one (labelled + unlabelled loader,
#: ``SemiSupervisedTrainer``); a method's own file goes after it
SEMI_SUPERVISED = ("methods/semi_supervised.json",)


@dataclass(frozen=True)
class Method:
    """One trainable method.

    Args:
        name: name on the command line, in folders and in tables.
        bundle: the bundle of its (last) training phase: one of ``PHASES`` but phase 1.
        overrides: config files under the bundle's ``configs/`` stacked after ``train.json`` (and
            ``profile_3d.json``), before the profile and the runner's ids, in this order.
        settings: bundle ids that define the method (stacked after the profile, before user overrides).
        pretrain: run phase 1 first (shared per seed) and start from its ``teacher.pt``; without it the cotrain
            bundle gets ``teacher_ckpt=""``.
        phase1_settings: teacher_pretrain ids of its phase 1 (for example the backbone, which phase 2 must match);
            phase 1 is shared by the methods whose phase-1 settings are equal.
        diffusion: the runner's ``--rounds`` / ``--round-mode`` / ``--no-pretrain`` apply (and mark the folder name).
        fixed_ratio: train at this labelled ratio whatever ``--ratios`` says (the upper bound: 1.0).
        cost: relative cost of one run; with ``--jobs`` the costliest runs start first.
        description: one line for ``--help`` and the docs.
    """

    name: str
    bundle: str
    overrides: tuple[str, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)
    pretrain: bool = False
    phase1_settings: Mapping[str, Any] = field(default_factory=dict)
    diffusion: bool = False
    fixed_ratio: float | None = None
    cost: int = 1
    description: str = ""

    def __post_init__(self) -> None:
        trainable = [p for p in PHASES if p != PRETRAIN_PHASE]
        if self.bundle not in trainable:
            raise ValueError(f"method {self.name!r}: bundle must be one of {trainable}, got {self.bundle!r}.")
        if self.pretrain and self.bundle != "cotrain":
            raise ValueError(f"method {self.name!r}: phase 1 only precedes the cotrain bundle.")
        if self.phase1_settings and not self.pretrain:
            raise ValueError(f"method {self.name!r}: phase1_settings without phase 1 (pretrain=False).")
        object.__setattr__(self, "overrides", tuple(self.overrides))

    def phases(self, pretrain: bool = True) -> tuple[str, ...]:
        """The bundles it trains, in order (``pretrain``: the runner's ``--no-pretrain`` for ``diffusion`` methods)."""
        first = (PRETRAIN_PHASE,) if self.pretrain and (pretrain or not self.diffusion) else ()
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
register(Method("mean_teacher", bundle="supervised", overrides=(*SEMI_SUPERVISED, "methods/mean_teacher.json"),
                cost=1, description="mean teacher (EMA teacher, softmax-MSE consistency with sigmoid ramp-up) on the "
                "supervised bundle's UNet"))
register(Method("uamt", bundle="supervised",
                overrides=(*SEMI_SUPERVISED, "methods/mean_teacher.json", "methods/uamt.json"), cost=2,
                description="uncertainty-aware mean teacher (Monte-Carlo-dropout uncertainty mask, Yu et al. 2019)"))
register(Method("bcp", bundle="supervised",
                overrides=(*SEMI_SUPERVISED, "methods/mean_teacher.json", "methods/bcp.json"), cost=1,
                description="bidirectional copy-paste on a mean teacher (Bai et al. 2023)"))
register(Method("unimatch", bundle="supervised", overrides=(*SEMI_SUPERVISED, "methods/unimatch.json"), cost=2,
                description="UniMatch: weak / strong views + feature-dropout stream, confidence 0.95 (Yang et al. "
                "2023)"))
register(Method("cps", bundle="supervised", overrides=(*SEMI_SUPERVISED, "methods/cps.json"), cost=2,
                description="cross pseudo-supervision of two plain UNets of the supervised bundle (Chen et al. 2021)"))
register(Method("cps_diffusion", bundle="cotrain", settings={"rounds": 0}, cost=2,
                description="the cotrain bundle without phase 1 and with R = 0 (CPS on the diffusion backbone: the "
                "paper's ablation)"))
register(Method("full", bundle="cotrain", pretrain=True, diffusion=True, cost=2,
                description="phase 1, then co-training with diffusion rounds (the method of the paper) on the bundles' "
                "default recipe: R = 1 round on the unlabelled half of the batch (round_batch unlabeled), the paper's "
                "DiffusionModelUNet; as good as the paper's R = 3 on the whole batch at about half its cost "
                "(docs/results/ph2_32_cpu_fast_recipe.md)"))
register(Method("full_safe", bundle="cotrain", pretrain=True, diffusion=True, cost=3,
                settings={"phase1_gate": True, "unlabeled_rampup_frac": 0.4, "pseudo_confidence": 0.8},
                description="the full method with the issue-25 safeguards on (a starting point, not yet measured): "
                "phase-1 gate (a fresh teacher when phase 1 does not beat all-foreground), unlabelled terms ramped "
                "up over the first 0.4 of the iterations (sigmoid), pseudo-labelled pixels under probability 0.8 "
                "ignored"))
register(Method("full_fast", bundle="cotrain", pretrain=True, cost=1,
                settings={"backbone": "fast", "round_batch": "unlabeled", "rounds": 3},
                phase1_settings={"backbone": "fast"},
                description="the full method on TimeConditionedUNet (backbone fast, phase 1 too; about the supervised "
                "UNet's cost per pass), R = 3 on the unlabelled half: about 10x cheaper than full_paper, 3 Dice points "
                "below it on PH2 32x32 (docs/results/ph2_32_cpu_fast_recipe.md)"))
register(Method("full_paper", bundle="cotrain", pretrain=True, cost=3, settings={"rounds": 3, "round_batch": "all"},
                description="the full method as the paper sets it: R = 3 rounds on the whole batch (the default 'full' "
                "before December 2026); phase 1 shared with full"))
register(Method("upper", bundle="supervised", fixed_ratio=1.0, cost=1,
                description="the supervised bundle on every training case (fully supervised upper bound)"))
