"""Data layer: synthetic default data, splits, datalist loading/validation, preparation helpers."""

from .datalist import DatalistError, load_datalist, validate_datalist
from .splits import make_split, split_filename, write_split
from .synthetic import make_synthetic_dataset

__all__ = [
    "DatalistError",
    "load_datalist",
    "validate_datalist",
    "make_split",
    "write_split",
    "split_filename",
    "make_synthetic_dataset",
]
