"""Tests of custom_components.transforms (a package: tests/bundles/test_pseudolabel.py shares a basename)."""
