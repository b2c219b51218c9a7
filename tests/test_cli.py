"""The skae command."""

import pytest

from skae.cli import main


def test_demo_prints_the_comparison_table(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    for expected in (
        "expl. var",
        "mean L0",
        "KMeans ARI",
        "5-fold acc",
        "PCA(16)",
        "KSparse(128, k=16)",
    ):
        assert expected in out
    ksparse = next(line for line in out.splitlines() if line.startswith("KSparse"))
    explained_variance, mean_l0 = map(float, ksparse.split()[2:4])
    assert mean_l0 <= 16
    assert explained_variance > 0.85


def test_unknown_command_exits_with_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
