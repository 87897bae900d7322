"""Notebooks make claims that can fail.

nbval compares a ``# NBVAL_CHECK_OUTPUT`` cell only against a *stored* output; the notebooks
here are stored without outputs, so such a marker would check nothing (a marked cell printing
``False`` passes). Claims are ``assert`` cells instead; these tests keep it that way.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def _code_cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 2


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_output_check_marker_without_a_stored_output(path):
    for i, cell in enumerate(_code_cells(path)):
        source = "".join(cell["source"])
        if "NBVAL_CHECK_OUTPUT" in source:
            assert cell.get("outputs"), (
                f"{path.name} cell {i} is marked NBVAL_CHECK_OUTPUT but has no stored output, "
                "so nbval checks nothing: write an assert instead"
            )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_without_outputs_and_claims_are_asserts(path):
    cells = _code_cells(path)
    assert all(not c.get("outputs") for c in cells), f"{path.name}: clear the outputs"
    asserts = sum("assert " in "".join(c["source"]) for c in cells)
    assert asserts >= 3, f"{path.name}: only {asserts} cells assert anything"
