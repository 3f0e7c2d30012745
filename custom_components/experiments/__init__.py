"""The experiment layer: methods, profiles' iteration budgets, the runner and its reports.

``scripts/run_experiments.py`` is the command line of ``Experiment``; see ``runner`` for what a call does.
"""

from .budget import PhaseBudget, Profile, available_profiles, iterations_to_epochs, load_profile, schedule_ids
from .environment import environment_info, relative_path
from .methods import METHODS, Method, get_method, register, run_name
from .report import aggregate, format_console_table, format_markdown_table, write_markdown
from .runner import Experiment, RunnerError, RunnerSettings, parse_override, run_tasks, write_splits

__all__ = [
    "METHODS", "Experiment", "Method", "PhaseBudget", "Profile", "RunnerError", "RunnerSettings", "aggregate",
    "available_profiles", "environment_info", "format_console_table", "format_markdown_table", "get_method",
    "iterations_to_epochs", "load_profile", "parse_override", "register", "relative_path", "run_name", "run_tasks",
    "schedule_ids", "write_markdown", "write_splits",
]
