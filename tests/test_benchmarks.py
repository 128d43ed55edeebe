"""The benchmark code itself, run on tiny synthetic data so that it cannot rot unnoticed."""

import json

import numpy as np
import pytest

from benchmarks import __main__ as runner
from benchmarks import tabular


@pytest.fixture
def tiny_adbench(tmp_path):
    rng = np.random.RandomState(0)
    X = np.r_[rng.normal(size=(80, 3)), rng.normal(loc=6.0, size=(8, 3))]
    y = np.r_[np.zeros(80, int), np.ones(8, int)]
    (tmp_path / "adbench").mkdir()
    np.savez(tmp_path / "adbench" / "1_toy.npz", X=X, y=y)
    return tmp_path


def test_tabular_suite_scores_every_method_on_the_same_split(tiny_adbench):
    results = tabular.run(tiny_adbench, seeds=[0, 1], quick=True, log=lambda *_: None)
    methods = results["toy"]["methods"]
    assert {"vaedetect", "vaedetect_latent", "isolation_forest", "pca", "lof"} <= set(methods)
    assert results["toy"]["n_test"] == 27  # 30% of 88, stratified
    for runs in methods.values():
        assert [r["seed"] for r in runs] == [0, 1]
        # far-away anomalies: every method ranks them well above chance
        assert all(r["roc_auc"] > 0.8 for r in runs)
    assert "| toy (61 / 27, 9.1%) |" in tabular.markdown(results)


def test_runner_writes_json_and_markdown(tiny_adbench, tmp_path):
    out, page = tmp_path / "b.json", tmp_path / "b.md"
    runner.run(["--quick", "--data-dir", str(tiny_adbench), "--out", str(out), "--markdown", str(page)])
    results = json.loads(out.read_text())
    assert set(results["suites"]) == {"tabular", "cli"}
    assert 0 < results["suites"]["cli"]["median_seconds"] < 10
    assert "## Tabular: ADBench" in page.read_text() and "vaedetect --help" in page.read_text()


def test_missing_data_skips_the_suite_with_the_reason(tmp_path):
    results = runner.run(["--quick", "--suites", "tabular", "--data-dir", str(tmp_path), "--out", "", "--markdown", ""])
    assert "no ADBench .npz files" in results["skipped"]["tabular"]
