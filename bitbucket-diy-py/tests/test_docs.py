"""Every ```python block of docs/python.md runs, so the documentation cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "python.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)


def test_the_page_has_runnable_examples() -> None:
    assert len(BLOCKS) >= 6, f"{DOC}: expected the runnable examples"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_documented_example_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = compile(BLOCKS[index], f"{DOC.name} example {index + 1}", "exec")
    exec(code, {"__name__": f"docs_example_{index + 1}"})
