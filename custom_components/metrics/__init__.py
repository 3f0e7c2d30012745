"""Segmentation metrics (Dice, Jaccard, HD95, ASD) under named protocols, summaries and report writers."""

from custom_components.metrics.dice import dice_from_counts, label_dice, mask_dice
from custom_components.metrics.output_average import BestAssignmentDice, OutputAverage
from custom_components.metrics.protocols import EMPTY_CASES_DOC, PROTOCOLS, EvaluationProtocol, get_protocol
from custom_components.metrics.reports import CSV_NAME, JSON_NAME, file_stem, format_table, write_reports
from custom_components.metrics.segmentation import (
    METRICS,
    compute_case_metrics,
    largest_connected_component,
    resolve_class_names,
    summarize,
    surface_distances,
)

__all__ = [
    "dice_from_counts",
    "label_dice",
    "mask_dice",
    "OutputAverage",
    "BestAssignmentDice",
    "EMPTY_CASES_DOC",
    "PROTOCOLS",
    "EvaluationProtocol",
    "get_protocol",
    "CSV_NAME",
    "JSON_NAME",
    "file_stem",
    "format_table",
    "write_reports",
    "METRICS",
    "compute_case_metrics",
    "largest_connected_component",
    "resolve_class_names",
    "summarize",
    "surface_distances",
]
