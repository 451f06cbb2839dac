"""Fixtures for the models tests: the reference parameter counts (tests/reference/param_counts.csv)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

PARAM_COUNTS = Path(__file__).resolve().parents[1] / "reference" / "param_counts.csv"


@pytest.fixture(scope="session")
def reference_param_counts() -> dict[str, dict[str, str]]:
    """model -> {params, tolerance, source}, as the reference implementations count them."""
    with open(PARAM_COUNTS) as handle:
        return {row["model"]: row for row in csv.DictReader(line for line in handle if not line.startswith("#"))}
