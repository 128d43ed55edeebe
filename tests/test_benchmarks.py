"""The benchmark code itself, run on tiny synthetic data so that it cannot rot unnoticed."""

import json

import numpy as np
import pytest

from benchmarks import __main__ as runner
from benchmarks import one_class, speed, tabular

from .conftest import needs_lite0


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
    assert results["default_likelihood"] == "auto" and "a Laplace decoder" in page.read_text()


def test_missing_data_skips_the_suite_with_the_reason(tmp_path):
    results = runner.run(["--quick", "--suites", "tabular", "--data-dir", str(tmp_path), "--out", "", "--markdown", ""])
    assert "no ADBench .npz files" in results["skipped"]["tabular"]


def test_every_result_records_how_it_was_made(tmp_path):
    from benchmarks._provenance import describe_run, write_results

    record = describe_run("python -m benchmarks.architecture", ["--digits", "2", "3"])
    assert record["command"] == "python -m benchmarks.architecture --digits 2 3"
    assert {"vaedetect", "torch", "python"} <= set(record["versions"])
    assert "torch threads" in record["machine"]
    write_results(record, str(tmp_path / "sub" / "r.json"), None, "never written")
    assert json.loads((tmp_path / "sub" / "r.json").read_text()) == record
    assert [path.name for path in tmp_path.rglob("*") if path.is_file()] == ["r.json"]


def test_training_speed_figures_are_consistent_ratios():
    result = speed.training_suite(image_size=16, n_images=64, epochs=1)
    assert result["speed_up"] == pytest.approx(
        result["vaedetect_images_per_second"] / result["plain_loop_images_per_second"])
    assert result["training_gflop_per_image"] > 0
    assert 0 < result["share_of_peak"] == pytest.approx(result["achieved_gflops"] / result["matmul_peak_gflops"])


def test_torch_compile_comparison_reports_eager_and_compiled_rates():
    from benchmarks import torch_compile

    # the "eager" backend runs dynamo's capture without generating code: the measuring code, fast
    rates = {"training": torch_compile.training(8, steps=3, warm_up=1, backend="eager"),
             "scoring": torch_compile.scoring(8, batch_size=8, repeats=1, backend="eager")}
    for row in rates.values():
        assert row["speed_up"] == pytest.approx(row["compiled_images_per_second"] / row["eager_images_per_second"])
    page = torch_compile.markdown({"command": "c", "date": "d", "machine": "m", "versions": {"torch": "t"},
                                   "sizes": {"8": rates}})
    assert page.count("| 8 |") == 2


def test_folder_scoring_speed_and_memory_run_on_a_small_folder(tmp_path):
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.RandomState(0)
    for i in range(12):
        Image.fromarray(rng.randint(0, 256, size=(20, 20, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    model = speed.fit_speed_model(tmp_path / "m.vae", image_size=8)
    scoring = speed.scoring_suite(folder, model, n_files=10)
    assert scoring["n_files"] == 10 and scoring["rounds"] == 2 and scoring["share_of_model_only"] > 0
    assert set(scoring["folder_images_per_second_by_workers"]) == {"0", "2"}
    memory = speed.peak_memory_suite(folder, model, tmp_path / "scores.csv")
    assert memory["exit_code"] == 0 and memory["n_files"] == 12 and memory["peak_rss_mb"] > 50


def test_a_sampled_folder_keeps_every_nth_photo_in_its_subfolder(tmp_path):
    from PIL import Image

    for i in range(10):
        (tmp_path / "photos" / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(tmp_path / "photos" / f"class{i % 2}" / f"{i}.jpg")
    sample = speed.sample_folder(tmp_path / "photos", tmp_path / "sample", every=4)
    kept = sorted(str(path.relative_to(sample)) for path in sample.rglob("*.jpg"))
    # the listing is class0/0 2 4 6 8, then class1/1 3 5 7 9: its files 0, 4 and 8
    assert kept == ["class0/0.jpg", "class0/8.jpg", "class1/7.jpg"]


@pytest.mark.parametrize(("tenth_mb", "verdict"), [(800.0, "**met**"), (600.0, "**not met**")])
def test_peak_memory_counts_as_independent_of_the_folder_below_a_tenth_more(tenth_mb, verdict):
    whole, tenth = {"n_files": 50000, "peak_rss_mb": 850.0}, {"n_files": 5000, "peak_rss_mb": tenth_mb}
    line = runner._memory_growth(whole, tenth)
    assert f"{850.0 / tenth_mb:.2f}x the peak memory" in line and line.endswith(f"{verdict}).")


def _write_idx(path, array, magic):
    import gzip
    import struct

    with gzip.open(path, "wb") as file:
        file.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in array.shape) + array.tobytes())


def _write_images_data(folder, n_train: int):
    """A data folder with a (mostly blank) MNIST of 5,004 digits and a CIFAR-10 of two classes, ``n_train``
    photos each in the training split and six in the test split: dogs bright, cats dark."""
    import io
    import tarfile

    from PIL import Image

    rng = np.random.RandomState(0)
    (folder / "mnist").mkdir()
    digits = np.zeros((5004, 28, 28), np.uint8)
    digits[:, 10:18, 12:16] = 255
    _write_idx(folder / "mnist" / "t10k-images-idx3-ubyte.gz", digits, 2051)
    _write_idx(folder / "mnist" / "t10k-labels-idx1-ubyte.gz", (np.arange(5004) % 10).astype(np.uint8), 2049)
    (folder / "cifar10").mkdir()
    for split, n in (("train", n_train), ("test", 6)):
        with tarfile.open(folder / "cifar10" / f"cifar10-{split}.tar", "w") as archive:
            for label, low in (("cat", 0), ("dog", 150)):
                for i in range(n):
                    buffer = io.BytesIO()
                    pixels = rng.randint(low, low + 100, size=(32, 32, 3), dtype=np.uint8)
                    Image.fromarray(pixels).save(buffer, format="JPEG")
                    member = tarfile.TarInfo(f"{split}/{label}/{i}.jpg")
                    member.size = buffer.tell()
                    buffer.seek(0)
                    archive.addfile(member, buffer)
    return folder


@pytest.fixture
def tiny_images_data(tmp_path):
    """Six photos of each class in each split."""
    return _write_images_data(tmp_path, n_train=6)


def test_one_class_run_scores_vaedetect_and_peers_on_the_same_images(monkeypatch):
    monkeypatch.setattr(one_class, "QUICK_EPOCHS", 2)
    rng = np.random.RandomState(0)
    train = rng.randint(0, 60, size=(24, 8, 8), dtype=np.uint8)
    test = np.r_[rng.randint(0, 60, size=(10, 8, 8)), rng.randint(190, 256, size=(10, 8, 8))].astype(np.uint8)
    is_anomaly = np.r_[np.zeros(10, bool), np.ones(10, bool)]
    entry = one_class.run_class(train, test, is_anomaly, seeds=[0, 1], quick=True,
                                far_sets={"blank": np.full((5, 8, 8), 255, np.uint8)})
    assert set(entry["methods"]) == {"vaedetect", "vaedetect_elbo", "vaedetect_latent",
                                     "isolation_forest", "pca", "lof"}
    assert (entry["n_train"], entry["n_test"], entry["anomaly_share"]) == (24, 20, 0.5)
    for method, runs in entry["methods"].items():
        assert [r["seed"] for r in runs] == [0, 1]
        assert all(0.0 <= r["roc_auc"] <= 1.0 and r["fit_seconds"] >= 0 for r in runs)
    # bright squares among dark ones: the pixel-space peers cannot miss them
    assert entry["methods"]["isolation_forest"][0]["roc_auc"] == 1.0
    assert set(entry["far_ood"]["blank"]) == set(entry["methods"])


@pytest.mark.filterwarnings("ignore:n_neighbors .* is greater than the total number of samples")
def test_runner_cifar_suite_trains_each_class_and_reports_far_ood(tiny_images_data, tmp_path, monkeypatch):
    monkeypatch.setattr(one_class, "QUICK_EPOCHS", 1)
    monkeypatch.setattr(one_class, "N_FAR_OOD", 4)
    page = tmp_path / "b.md"
    results = runner.run(["--quick", "--suites", "cifar10", "--data-dir", str(tiny_images_data), "--out", "",
                          "--markdown", str(page)])
    suite = results["suites"]["cifar10"]
    assert set(suite) == {"cat", "dog"}
    assert (suite["dog"]["n_train"], suite["dog"]["n_test"], suite["dog"]["anomaly_share"]) == (6, 12, 0.5)
    assert set(suite["dog"]["far_ood"]) == {"mnist", "constant", "noise"} and not suite["cat"]["far_ood"]
    text = page.read_text()
    assert "## One-class CIFAR-10" in text and "| dog (6 / 12, 50.0%) |" in text
    assert "Slowest training of one class" in text and "dog vs noise" in text


def test_render_rewrites_the_page_from_saved_results(tiny_adbench, tmp_path):
    out, page = tmp_path / "b.json", tmp_path / "b.md"
    runner.run(["--quick", "--suites", "cli", "--data-dir", str(tiny_adbench), "--out", str(out), "--markdown", ""])
    runner.render(["--json", str(out), "--markdown", str(page)])
    assert "vaedetect --help" in page.read_text()


def test_render_merges_runs_of_different_seeds_into_one_page(tiny_adbench, tmp_path):
    parts = []
    for seed in ("0", "1"):
        parts.append(tmp_path / f"seed{seed}.json")
        runner.run(["--quick", "--suites", "tabular", "--seeds", seed, "--data-dir", str(tiny_adbench),
                    "--out", str(parts[-1]), "--markdown", ""])
    merged, page = tmp_path / "merged.json", tmp_path / "merged.md"
    runner.render(["--json", *map(str, parts), "--markdown", str(page), "--out", str(merged)])
    results = json.loads(merged.read_text())
    alone = [json.loads(part.read_text()) for part in parts]
    assert results["seeds"] == [0, 1] and len(results["parts"]) == 2
    assert results["seconds"] == pytest.approx(sum(run["seconds"] for run in alone))
    runs = results["suites"]["tabular"]["toy"]["methods"]["isolation_forest"]
    assert runs == [run["suites"]["tabular"]["toy"]["methods"]["isolation_forest"][0] for run in alone]
    text = page.read_text()
    assert "from 2 runs" in text and text.count("--seeds") == 2


def test_merging_refuses_a_seed_measured_twice(tiny_adbench, tmp_path):
    out = tmp_path / "seed0.json"
    runner.run(["--quick", "--suites", "tabular", "--data-dir", str(tiny_adbench), "--out", str(out), "--markdown", ""])
    with pytest.raises(ValueError, match="toy: seed 0 of vaedetect appears in two runs"):
        runner.render(["--json", str(out), str(out), "--markdown", str(tmp_path / "page.md")])


def _saved_run(**fields):
    run = {"command": "python -m benchmarks run", "date": "2026-01-01T00:00:00+00:00", "seconds": 1.0,
           "seeds": [0], "quick": False, "machine": {}, "versions": {}, "suites": {}, "skipped": {}}
    return run | fields


def test_render_takes_only_the_named_suites_of_a_run(tiny_adbench, tmp_path):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    for out, suites in ((old, ["tabular", "cli"]), (new, ["tabular"])):
        runner.run(["--quick", "--suites", *suites, "--data-dir", str(tiny_adbench), "--out", str(out), "--markdown", ""])
    merged = tmp_path / "merged.json"
    page = runner.render(["--json", f"{old}#cli", str(new), "--markdown", str(tmp_path / "m.md"), "--out", str(merged)])
    results = json.loads(merged.read_text())
    assert results["suites"]["tabular"] == json.loads(new.read_text())["suites"]["tabular"]
    assert "cli" in results["suites"] and "(used for cli only)" in page
    with pytest.raises(ValueError, match="has no suite mnist"):
        runner.render(["--json", f"{old}#mnist", "--markdown", str(tmp_path / "m.md")])


def test_merging_refuses_runs_trained_for_different_default_epochs():
    recorded_before_the_field = _saved_run()  # trained with the then default, 30 epochs
    with pytest.raises(ValueError, match=r"different default epochs: \[30, 25\]"):
        runner.merge_runs([recorded_before_the_field, _saved_run(default_epochs=25)], "render")
    assert runner.merge_runs([_saved_run(default_epochs=25)] * 2, "render")["default_epochs"] == 25
    with pytest.raises(ValueError, match=r"different default epochs: \[25, 'auto'\]"):
        runner.merge_runs([_saved_run(default_epochs=25), _saved_run(default_epochs="auto")], "render")


def test_single_measurements_merge_with_runs_of_another_default_epochs():
    speed_only = _saved_run(default_epochs=25, suites={"cli": {"median_seconds": 0.1}})
    trained = _saved_run(default_epochs="auto", suites={"tabular": {}})
    merged = runner.merge_runs([speed_only, trained], "render")
    assert merged["default_epochs"] == "auto" and merged["suites"]["cli"] == {"median_seconds": 0.1}


def test_settings_are_compared_on_the_seeds_both_measured():
    from benchmarks import compare

    def entry(*runs):
        return {"methods": {"vaedetect": [{"seed": seed, "roc_auc": auc, "fit_seconds": fit} for seed, auc, fit in runs]}}

    before = {"cat": entry((0, 0.60, 600.0), (1, 0.70, 640.0)), "dog": entry((0, 0.62, 580.0))}
    after = {"cat": entry((0, 0.58, 500.0)), "ship": entry((0, 0.66, 490.0))}
    rows = compare.side_by_side(before, after)
    assert list(rows) == ["cat"]  # dog and ship were measured under one setting only
    assert rows["cat"] == {"seeds": [0], "roc_auc": (0.60, 0.58), "fit_seconds": (600.0, 500.0)}
    table = compare.markdown(rows, ("30 epochs", "25 epochs"))
    assert "| cat (0) | 0.600 | 0.580 | 600 | 500 |" in table and "| **slowest** | | | 600 | 500 |" in table


def test_rows_resting_on_fewer_seeds_say_which():
    from benchmarks import _tables

    run = {"seed": 0, "roc_auc": 0.9, "average_precision": 0.5, "fit_seconds": 1.0, "score_seconds": 1.0}
    entry = {"n_train": 10, "n_test": 5, "anomaly_share": 0.2}
    results = {"a": {**entry, "methods": {"m": [run, {**run, "seed": 1}]}}, "b": {**entry, "methods": {"m": [run]}}}
    text = _tables.markdown(results)
    assert "| a (10 / 5, 20.0%; seeds 0, 1) |" in text and "| b (10 / 5, 20.0%; seeds 0) |" in text


def test_compare_page_carries_the_table_and_a_note_under_it(tmp_path):
    def saved(path, auc, fit):
        entry = {"methods": {"vaedetect": [{"seed": 0, "roc_auc": auc, "fit_seconds": fit}]}}
        versions = {"vaedetect": "0.1.0", "torch": "2.2", "python": "3.11"}
        path.write_text(json.dumps(_saved_run(suites={"cifar10": {"cat": entry}}, machine="cpu", versions=versions)))
        return str(path)

    before, after = saved(tmp_path / "a.json", 0.61, 600.0), saved(tmp_path / "b.json", 0.60, 400.0)
    page = runner.compare_settings(["--before", before, "--after", after, "--labels", "25", "auto",
                                    "--note", "Measured hours apart.", "--markdown", str(tmp_path / "c.md")])
    assert "| cat (0) | 0.610 | 0.600 | 600 | 400 |" in page
    assert "| **slowest** | | | 600 | 400 |\n\nMeasured hours apart.\n" in page
    assert (tmp_path / "c.md").read_text() == page


def test_architecture_candidates_are_compared_on_the_same_digits():
    from benchmarks import architecture

    rng = np.random.RandomState(0)
    # the protocol's layout: images 0-4999 the training pool (40 of digit 0 here), 5000- the evaluation set
    pool = np.r_[rng.randint(0, 40, size=(40, 8, 8)), np.zeros((4960, 8, 8))].astype(np.uint8)
    pool_labels = np.r_[np.zeros(40, int), np.full(4960, 9)]
    test = rng.randint(0, 40, size=(40, 8, 8)).astype(np.uint8)
    test[20:, 2:6, 2:6] = 250
    test_labels = np.r_[np.zeros(20, int), np.ones(20, int)]
    images, labels = np.r_[pool, test], np.r_[pool_labels, test_labels]
    candidates = {"tiny": {"base_channels": 4, "n_stages": 1, "epochs": 2}}
    results = architecture.run(images, labels, digits=[0], seed=0, candidates=candidates, log=lambda *_: None)
    run = results["tiny"]["runs"][0]
    # bright squares among plain noise: well above chance even after 2 epochs of a 4-channel network
    assert run["digit"] == 0 and run["roc_auc"] > 0.75
    assert "| tiny | " in architecture.markdown(results)


def test_development_tasks_mix_one_class_into_the_others_at_the_stated_share():
    from benchmarks.tabular_selection import ANOMALY_SHARE, development_sets

    sets = development_sets()
    assert len(sets) == 17 and {"breast_cancer", "wine_0", "iris_2", "digits_9"} <= set(sets)
    for name, (X, y) in sets.items():
        assert len(X) == len(y) and set(np.unique(y)) == {0, 1}
        source = name if name in ANOMALY_SHARE else name.rsplit("_", 1)[0]
        assert y.mean() == pytest.approx(ANOMALY_SHARE[source], abs=0.01)
    X, y = sets["iris_0"]
    assert (y == 0).sum() == 100  # every versicolor and virginica; 11 setosa drawn as the anomalies


@pytest.mark.parametrize("text, expected", [
    ("likelihood=laplace", ("likelihood", "laplace")), ("epochs=3", ("epochs", 3)),
    ("learning_rate=1e-3", ("learning_rate", 0.001)), ("residual=false", ("residual", False)),
])
def test_candidate_settings_are_read_with_their_types(text, expected):
    from benchmarks.tabular_selection import parse_setting

    assert parse_setting(text) == expected


def test_a_misspelt_candidate_setting_fails_before_anything_trains():
    from sklearn.utils._param_validation import InvalidParameterError

    from benchmarks.tabular_selection import candidate_makers

    with pytest.raises(InvalidParameterError, match="likelihood"):
        candidate_makers([["typo", "likelihood=gausian"]])


@pytest.mark.parametrize("wrapper", ["preprocess=power", "preprocess=quantile", "ensemble=2", "refit_drop=0.1"])
def test_wrapped_candidates_rank_far_anomalies_first(wrapper):
    from benchmarks.tabular_selection import candidate_makers, parse_setting

    rng = np.random.RandomState(2)
    X_train, far = rng.normal(size=(120, 3)), rng.normal(loc=8.0, size=(5, 3))
    detector = candidate_makers([["wrapped", wrapper, "epochs=5"]])["wrapped"](seed=0).fit(X_train)
    scores = detector.score_samples(np.r_[X_train[:20], far])
    assert scores.shape == (25,) and scores[20:].max() < np.sort(scores[:20])[1]
    key, value = parse_setting(wrapper)
    stored = {"preprocess": "transform_", "ensemble": "members_", "refit_drop": "vae_"}[key]
    assert hasattr(detector, stored)
    if key == "ensemble":
        assert [member.random_state for member in detector.members_] == [0, 1]
    if key == "refit_drop":  # refitted on the 90% of rows that scored highest
        assert detector.n_kept_ == 108


def test_a_candidate_takes_at_most_one_wrapper():
    from benchmarks.tabular_selection import candidate_makers

    with pytest.raises(ValueError, match="at most one of"):
        candidate_makers([["both", "ensemble=2", "refit_drop=0.1"]])
    with pytest.raises(ValueError, match="preprocess must be"):
        candidate_makers([["typo", "preprocess=powr"]])


def test_selection_compares_candidates_on_development_tasks_then_confirms_on_adbench(
        tiny_adbench, tmp_path, monkeypatch):
    from benchmarks import tabular_selection

    rng = np.random.RandomState(1)
    toy = (np.r_[rng.normal(size=(90, 4)), rng.normal(loc=5.0, size=(10, 4))], np.r_[np.zeros(90, int), np.ones(10, int)])
    monkeypatch.setattr(tabular_selection, "development_sets", lambda: {"dev_toy": toy})
    out, page = tmp_path / "s.json", tmp_path / "s.md"
    tabular_selection.main(["--candidate", "gaussian", "likelihood=gaussian", "epochs=3",
                            "--candidate", "laplace", "likelihood=laplace", "epochs=3", "--seeds", "0",
                            "--confirm", "--data-dir", str(tiny_adbench), "--out", str(out), "--markdown", str(page)])
    results = json.loads(out.read_text())
    assert set(results["development"]["dev_toy"]["methods"]) == {"gaussian", "laplace", "isolation_forest"}
    assert results["candidates"]["laplace"] == "likelihood=laplace epochs=3"
    assert all(runs[0]["roc_auc"] > 0.8 for runs in results["adbench"]["toy"]["methods"].values())
    text = page.read_text()
    assert "## Confirmation on ADBench" in text and "`laplace` above `gaussian` on" in text


def test_selection_on_the_adbench_development_sets_ranks_against_isolation_forest(tiny_adbench, tmp_path):
    from benchmarks import tabular_selection

    (tiny_adbench / "adbench").rename(tiny_adbench / "adbench_dev")
    out, page = tmp_path / "s.json", tmp_path / "s.md"
    tabular_selection.main(["--development", "adbench_dev", "--candidate", "clipped", "clip=0", "epochs=3",
                            "--candidate", "stepped", "min_steps=40", "epochs=3", "--seeds", "0",
                            "--data-dir", str(tiny_adbench), "--out", str(out), "--markdown", str(page)])
    results = json.loads(out.read_text())
    assert results["adbench_dev"] == ["toy"] and set(results["development"]) == {"toy"}
    assert "| isolation_forest | " in page.read_text() and "ratio to IsolationForest" in page.read_text()


def test_the_comparison_with_isolation_forest_names_the_worst_set():
    from benchmarks.tabular_selection import against_isolation_forest

    def entry(ours, forest):
        return {"methods": {"vae": [{"roc_auc": ours}], "isolation_forest": [{"roc_auc": forest}]}}

    rows = against_isolation_forest({"a": entry(0.9, 0.8), "b": entry(0.6, 0.7), "c": entry(0.5, 0.5)}, ["a", "b", "c"])
    assert rows["vae"]["mean"] == pytest.approx(2.0 / 3) and rows["vae"]["ratio"] == pytest.approx(1.0)
    assert rows["vae"]["worst_set"] == "b" and rows["vae"]["worst_gap"] == pytest.approx(-0.1)


def test_merging_refuses_tabular_runs_of_different_default_likelihoods():
    recorded_before_the_field = _saved_run(default_epochs="auto", suites={"tabular": {}})
    with pytest.raises(ValueError, match="different default likelihoods"):
        runner.merge_runs([recorded_before_the_field, _saved_run(default_epochs="auto", default_likelihood="auto",
                                                                 suites={"tabular": {}})], "render")
    # the image suites were Gaussian under both defaults
    images = _saved_run(default_epochs="auto", suites={"mnist": {}})
    merged = runner.merge_runs([images, _saved_run(default_epochs="auto", default_likelihood="auto",
                                                   suites={"tabular": {}})], "render")
    assert merged["default_likelihood"] == "auto"


def test_the_tabular_screening_pages_the_benchmark_page_links_to_exist():
    from pathlib import Path

    docs = Path(__file__).parents[1] / "docs" / "experiments"
    assert [page for page in runner.TABULAR_SELECTION_PAGES if not (docs / page).is_file()] == []


def test_calibration_benchmark_predicts_the_conformal_rate_and_its_spread():
    from benchmarks.calibration import expected_rate, run_variance, summarise

    # 19 calibration scores: k = floor(0.1 * 20) = 2, so 2 / 20 exactly; 9 scores cannot reach 0.05
    assert expected_rate(0.1, 19) == pytest.approx(0.1) and expected_rate(0.05, 9) == 0.0
    # Beta(2, 18) variance 2 * 18 / (20^2 * 21), plus the binomial error of 100 fresh samples
    assert run_variance(0.1, 19, 100) == pytest.approx(36 / (400 * 21) + 0.09 / 100)
    runs = [{"validation_fraction": 0.1, "calibration_fraction": 0.1, "calibrated_on": "held-out", "n_calibration": 19,
             "roc_auc": auc, "fit_seconds": 1.0, "flagged": {fpr: flagged for fpr in ("0.01", "0.05", "0.1")},
             "expected": {fpr: 0.1 for fpr in ("0.01", "0.05", "0.1")},
             "variance": {fpr: 0.01 for fpr in ("0.01", "0.05", "0.1")}} for auc, flagged in ((0.9, 0.12), (0.8, 0.1))]
    (row,) = summarise(runs)
    assert row["runs"] == 2 and row["roc_auc"] == pytest.approx(0.85)
    assert row["0.1"]["excess"] == pytest.approx(0.01) and row["0.1"]["standard_error"] == pytest.approx(0.1 * 2**0.5 / 2)


def test_the_calibration_benchmark_draws_fresh_images_from_the_same_pool_or_the_other_half():
    from benchmarks.calibration import digit_split

    labels = np.arange(10000) % 2  # digit 0 at every even index, in both halves
    images = np.arange(10000)[:, None, None] * np.ones((1, 2, 2), dtype=int)  # each image holds its index
    fit, fresh, others = digit_split(0, images, labels, "random", seed=0, n_others=10)
    assert len(fit) + len(fresh) == np.sum(labels == 0) and len(fit) == round(0.6 * np.sum(labels == 0))
    assert not set(fit[:, 0, 0]) & set(fresh[:, 0, 0]) and len(others) == 10
    fit, fresh, _ = digit_split(0, images, labels, "halves", seed=0, n_others=10)
    assert fit[:, 0, 0].max() < 5000 <= fresh[:, 0, 0].min()


def test_the_feature_benchmark_tables_every_normal_class_and_the_mean():
    from benchmarks.features import markdown_one_class

    results = {"one_class": {"cat": {"gaussian": 0.8, "vaedetect": 0.6}, "dog": {"gaussian": 0.9, "vaedetect": 0.7}}}
    table = markdown_one_class(results)
    assert "| cat | 0.800 | 0.600 |" in table and "| **mean** | **0.850** | **0.650** |" in table


def test_the_feature_benchmark_embeds_once_and_reads_the_cache_back(tmp_path):
    from benchmarks.features import _embedded

    class Counting:
        calls = 0

        def transform(self, images):
            Counting.calls += 1
            return images * 2.0

    images = np.arange(6, dtype=np.float32).reshape(3, 2)
    first, _ = _embedded(Counting(), images, tmp_path / "e.npz")
    again, _ = _embedded(Counting(), images, tmp_path / "e.npz")
    np.testing.assert_array_equal(first, images * 2)
    np.testing.assert_array_equal(again, first)
    assert Counting.calls == 1


def _combined_seed(seed, auc):
    sets = ["mnist", "constant", "noise", "dog_blur", "cat", "truck"]
    return {"seed": seed, "fit_seconds": 100.0, "score_seconds": 34.0, "n_scored": 3400, "n_calibration": 100,
            "roc_auc": {method: {s: auc for s in sets} for method in ("pixels", "features", "combined")},
            "flagged_normal": {"0.05": 0.05, "0.01": 0.0}, "peak_memory_mb": 900.0}


def test_the_combined_page_averages_seeds_and_separates_far_sets_from_other_classes():
    from benchmarks import combined

    table = combined.markdown({"normal": "dog", "seeds": [_combined_seed(0, 0.8), _combined_seed(1, 0.9)]})
    assert "| combined | 0.850 | 0.850 | 0.850 | 0.850 | 0.850 | 0.850 | 0.850 +- 0.050 |" in table
    assert "| 1 | 100 | 10.0 | 100 | 0.050 / 0.000 | 900 |" in table


def test_the_one_class_features_page_gives_the_spread_of_the_mean_over_seeds():
    from benchmarks import features

    per_seed = {"cat": {"gaussian": [0.8, 0.8], "vaedetect": [0.7, 0.9]}, "dog": {"gaussian": [0.9, 0.9],
                                                                               "vaedetect": [0.9, 0.9]}}
    results = {"seeds": [0, 1], "one_class_per_seed": per_seed,
               "one_class": {c: {m: float(np.mean(v)) for m, v in row.items()} for c, row in per_seed.items()}}
    table = features.markdown_one_class(results)
    assert "| **mean** | **0.850** | **0.850** |" in table
    assert "| sd of the mean over seeds | 0.000 | 0.050 |" in table


@needs_lite0
@pytest.mark.filterwarnings("ignore:fpr=0.0[15] needs at least")  # a handful of calibration photos
def test_runner_feature_suites_score_each_class_with_peers_and_the_combined_verdict(tmp_path, monkeypatch):
    data = _write_images_data(tmp_path, n_train=40)  # enough for the combined model's calibration halves
    monkeypatch.setattr(runner, "QUICK_FEATURE_SIZES", {"n_train": 40, "per_class": 6, "n_synthetic": 1})
    page = tmp_path / "b.md"
    results = runner.run(["--quick", "--suites", "features", "combined", "--cifar-classes", "dog",
                          "--data-dir", str(data), "--out", "", "--markdown", str(page)])
    features, combined = results["suites"]["features"], results["suites"]["combined"]
    assert set(features["one_class"]) == {"dog"} and features["n_train"] == {"dog": 40}
    assert {"gaussian", "knn", "isolation_forest", "vaedetect"} <= set(features["one_class"]["dog"])
    assert set(combined) == {"dog"}
    aucs = combined["dog"]["seeds"][0]["roc_auc"]
    assert {"pixels", "features", "combined", "peer_gaussian"} <= set(aucs)
    assert set(aucs["combined"]) == {"mnist", "constant", "noise", "cat", *(f"dog_{c}" for c in
                                                                              ("noise", "blur", "jpeg", "bgr", "dark"))}
    # bright dogs against dark cats: the pixel model and the peers cannot miss them
    assert aucs["peer_gaussian"]["cat"] == 1.0
    text = page.read_text()
    assert "## One-class CIFAR-10 in feature space" in text and "## Pixels and features together" in text
    assert "| dog | " in text and "### dog" in text


def test_merged_runs_of_the_feature_suites_hold_every_class():
    parts = [_saved_run(suites={"features": {"seeds": [0], "one_class": {name: {"vaedetect": 0.9}},
                                             "one_class_per_seed": {name: {"vaedetect": [0.9]}}, "n_train": {name: 5}},
                                "combined": {name: {"seeds": []}}}) for name in ("cat", "dog")]
    merged = runner.merge_runs(parts, "render")
    assert set(merged["suites"]["features"]["one_class"]) == {"cat", "dog"}
    assert merged["suites"]["features"]["n_train"] == {"cat": 5, "dog": 5}
    assert set(merged["suites"]["combined"]) == {"cat", "dog"}


def test_tabular_scale_measures_each_share_in_its_own_process(tmp_path):
    from benchmarks import tabular_scale

    rng = np.random.RandomState(0)
    (tmp_path / "adbench_large").mkdir()
    np.savez(tmp_path / "adbench_large" / "1_toy.npz", X=rng.normal(size=(400, 3)), y=np.zeros(400, int))
    out, page = tmp_path / "s.json", tmp_path / "s.md"
    tabular_scale.main(["--data-dir", str(tmp_path), "--shares", "0.25", "1.0", "--out", str(out),
                        "--markdown", str(page)])
    rows = json.loads(out.read_text())["sets"]["toy"]
    assert [(row["exit_code"], row["n_rows"], row["n_scored"]) for row in rows] == [(0, 100, 400), (0, 400, 400)]
    assert all(row["peak_rss_mb"] > 50 and row["fit_seconds"] > 0 for row in rows)  # torch alone takes more
    assert "Target, fit on the largest table (toy, 400 rows) with peak memory under 3 GB" in page.read_text()


def test_growth_is_the_slope_per_hundred_thousand_rows():
    from benchmarks.tabular_scale import growth

    rows = [{"exit_code": 0, "n_rows": n, "fit_seconds": 2.0 + n / 50_000} for n in (1_000, 10_000, 100_000)]
    assert growth(rows, "fit_seconds") == pytest.approx(2.0)
    assert np.isnan(growth(rows[:1], "fit_seconds"))


def test_feature_map_scores_single_out_the_image_with_one_foreign_position():
    import torch

    from benchmarks.feature_maps import spatial_scores

    rng = np.random.RandomState(0)
    train = torch.from_numpy(rng.normal(size=(300, 8, 2, 2)).astype(np.float16))
    test = torch.from_numpy(rng.normal(size=(10, 8, 2, 2)).astype(np.float16))
    test[3, :, 1, 0] += 6.0  # one position of one image, far from every training position
    scores = spatial_scores(train, test, np.random.RandomState(0))
    assert set(scores) == {"per_position_max", "per_position_mean", "shared_max"}
    assert scores["per_position_max"].argmax() == 3 and scores["shared_max"].argmax() == 3
    assert scores["per_position_max"][3] > 5 * np.median(scores["per_position_max"])


def test_table_scoring_times_the_command_line_and_the_api_on_the_same_rows(tmp_path):
    from benchmarks import table_scoring

    out, page = tmp_path / "t.json", tmp_path / "t.md"
    table_scoring.main(["--sizes", "3000", "--train-rows", "300", "--out", str(out), "--markdown", str(page)])
    results = json.loads(out.read_text())
    assert [(row["rows"], row["format"], row["exit_code"]) for row in results["command_line"]] == [
        (3000, "csv", 0), (3000, "parquet", 0)]
    assert results["score_samples"]["n_rows"] == 3000 and results["score_samples"]["seconds"] > 0
    assert all(row["peak_rss_mb"] > 50 for row in results["command_line"])  # torch alone takes more
    assert "Targets: every run up to 3,000 rows under 1.5 GB" in page.read_text()


def test_leaving_one_data_set_out_scores_each_set_with_the_candidate_the_others_chose():
    from benchmarks.tabular_selection import leave_one_set_out

    def entry(**auc):
        return {"methods": {method: [{"seed": 0, "roc_auc": value}] for method, value in auc.items()}}

    # "broad" wins on three sets, "narrow" only on "d", by a margin that lifts its mean over the others of a, b
    # or c: left out, each of those is scored by "narrow" (the others average 0.797 against 0.700); "d" left out,
    # the others choose "broad" (0.80 against 0.70), which fails on "d"
    results = {"a": entry(broad=0.80, narrow=0.70, isolation_forest=0.75),
               "b": entry(broad=0.80, narrow=0.70, isolation_forest=0.75),
               "c": entry(broad=0.80, narrow=0.70, isolation_forest=0.75),
               "d": entry(broad=0.50, narrow=0.99, isolation_forest=0.75)}
    outcome = leave_one_set_out(results, ["broad", "narrow"])
    assert outcome["chosen"] == {"a": "narrow", "b": "narrow", "c": "narrow", "d": "broad"}
    assert outcome["mean"] == pytest.approx((0.70 * 3 + 0.50) / 4)
    assert outcome["ratio"] == pytest.approx(outcome["mean"] / 0.75)
    assert outcome["worst_set"] == "d" and outcome["worst_gap"] == pytest.approx(0.50 - 0.75)


def test_nearest_neighbour_evidence_leaves_a_training_row_out_of_its_own_neighbours():
    from benchmarks.tabular_evidence import KNN_NEIGHBOURS, knn_scores

    reference = np.arange(10, dtype=float)[:, None]  # rows 0, 1, ..., 9 on a line
    # row 0's five nearest other rows are 1..5: mean distance 3; without leaving itself out it would be 2
    assert knn_scores(reference)[0] == pytest.approx(-3.0) and KNN_NEIGHBOURS == 5
    # new rows: 20 is 11..15 from its five nearest (9..5), mean 13; 4.5 is 0.5, 0.5, 1.5, 1.5, 2.5 away, mean 1.3
    assert knn_scores(reference, np.array([[20.0], [4.5]])) == pytest.approx([-13.0, -1.3])


def test_peers_rank_by_their_mean_rank_over_the_sets_each_ran_on():
    from benchmarks.tabular_peers import markdown_page, ranking

    def run(auc, ap=0.5, seconds=1.0):
        return [{"seed": 0, "roc_auc": auc, "average_precision": ap, "fit_seconds": seconds, "score_seconds": 0.0}]

    results = {"seed": 0, "sets": {
        "a": {"methods": {"vaedetect": run(0.9), "pyod_ecod": run(0.8), "pyod_mcd": run(0.7)}, "errors": {}},
        "b": {"methods": {"vaedetect": run(0.6), "pyod_ecod": run(0.7)}, "errors": {"pyod_mcd": "ValueError: singular"}},
    }}
    rows = {row["method"]: row for row in ranking(results)}
    assert rows["vaedetect"]["mean_rank"] == 1.5 and rows["pyod_ecod"]["mean_rank"] == 1.5
    assert rows["pyod_mcd"]["mean_rank"] == 3 and rows["pyod_mcd"]["failed"] == 1 and rows["pyod_mcd"]["n_sets"] == 1
    assert rows["vaedetect"]["worst_set"] == "b" and rows["vaedetect"]["roc_auc"] == pytest.approx(0.75)
    page = markdown_page({**results, "command": "python -m benchmarks.tabular_peers", "date": "today",
                          "machine": "a machine", "versions": {"vaedetect": "0", "torch": "0"}})
    assert "- `pyod_mcd` on b: ValueError: singular" in page and "| **vaedetect** |" in page
