"""The benchmark code itself, run on tiny synthetic data so that it cannot rot unnoticed."""

import json

import numpy as np
import pytest

from benchmarks import __main__ as runner
from benchmarks import speed, tabular


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
    runner.run(["--quick", "--suites", "tabular", "cli", "--data-dir", str(tiny_adbench), "--out", str(out),
                "--markdown", str(page)])
    results = json.loads(out.read_text())
    assert set(results["suites"]) == {"tabular", "cli"}
    assert 0 < results["suites"]["cli"]["median_seconds"] < 10
    assert "## Tabular: ADBench" in page.read_text() and "vaedetect --help" in page.read_text()


def test_missing_data_skips_the_suite_with_the_reason(tmp_path):
    results = runner.run(["--quick", "--suites", "tabular", "--data-dir", str(tmp_path), "--out", "", "--markdown", ""])
    assert "no ADBench .npz files" in results["skipped"]["tabular"]


def test_training_speed_figures_are_consistent_ratios():
    result = speed.training_suite(image_size=16, n_images=64, epochs=1)
    assert result["speed_up"] == pytest.approx(
        result["vaedetect_images_per_second"] / result["plain_loop_images_per_second"])
    assert result["training_gflop_per_image"] > 0
    assert 0 < result["share_of_peak"] == pytest.approx(result["achieved_gflops"] / result["matmul_peak_gflops"])


def test_folder_scoring_speed_and_memory_run_on_a_small_folder(tmp_path):
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.RandomState(0)
    for i in range(12):
        Image.fromarray(rng.randint(0, 256, size=(20, 20, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    model = speed.fit_speed_model(tmp_path / "m.vae", image_size=8)
    scoring = speed.scoring_suite(folder, model, n_files=10)
    assert scoring["n_files"] == 10 and scoring["share_of_model_only"] > 0
    memory = speed.peak_memory_suite(folder, model, tmp_path / "scores.csv")
    assert memory["exit_code"] == 0 and memory["n_files"] == 12 and memory["peak_rss_mb"] > 50
