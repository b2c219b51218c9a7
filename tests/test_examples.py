"""Every gallery example runs to the end."""

import runpy
from pathlib import Path

import matplotlib.pyplot as plt
import PIL  # noqa: F401  the gallery's images need it
import pytest

DOCS = Path(__file__).parents[1] / "docs"
EXAMPLES = sorted((DOCS / "examples").glob("plot_*.py"))


def test_this_runs_every_example_the_gallery_executes():
    # sphinx-gallery runs the files that match its pattern in its folder;
    # the docs' conf.py is read, not imported, as the docs extras may be absent.
    conf = (DOCS / "conf.py").read_text()
    assert '"examples_dirs": "examples"' in conf
    assert '"filename_pattern": r"/plot_"' in conf
    executed = sorted(
        path for path in (DOCS / "examples").rglob("*.py") if "/plot_" in str(path)
    )
    assert executed == EXAMPLES and EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.stem)
def test_example_runs(path, monkeypatch):
    monkeypatch.chdir(path.parent)
    try:
        runpy.run_path(str(path), run_name="__main__")
        assert plt.get_fignums(), f"{path.name} draws no figure"
    finally:
        plt.close("all")
