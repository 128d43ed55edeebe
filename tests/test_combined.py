"""CombinedDetector: the pixel VAE and the feature VAE, one calibrated verdict."""

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import vaedetect
from vaedetect import CombinedDetector, VAEDetector
from vaedetect.backbones import FeatureExtractor
from vaedetect.cli import main

from tests.conftest import needs_lite0, tiny_backbone

PIXEL = dict(latent_dim=2, base_channels=4, n_stages=2, epochs=2, batch_size=32)


def _detector(backbone=None, **params):
    backbone = backbone or FeatureExtractor(tiny_backbone(), image_size=8)
    return CombinedDetector(VAEDetector(**PIXEL), VAEDetector(backbone=backbone, latent_dim=2, epochs=2), **params)


def _images(n, seed, side=8):
    """Smooth random images: a colour gradient plus a little noise."""
    rng = np.random.RandomState(seed)
    ramp = np.linspace(0, 1, side)
    base = rng.uniform(0.2, 0.8, size=(n, 1, 1, 3)) + 0.2 * ramp[None, :, None, None]
    return np.clip(base + rng.normal(0, 0.03, size=(n, side, side, 3)), 0, 1).astype(np.float32)


def test_every_held_out_image_is_a_reference_and_calibrates_the_verdict_against_the_others():
    from vaedetect.conformal import leave_one_out_log_tail_probability

    detector = _detector(random_state=0, calibration_fraction=0.2).fit(_images(200, 0))
    pairs = np.column_stack([detector.pixel_.calibration_.scores, detector.features_.calibration_.scores])
    assert len(pairs) == 40 and detector.training_summary_["n_reference"] == detector.training_summary_["n_calibration"] == 40
    np.testing.assert_array_equal(detector.reference_scores_, pairs)
    each_against_the_others = np.column_stack([leave_one_out_log_tail_probability(pairs[:, m]) for m in range(2)])
    weights = np.array([detector.pixel_weight, 1 - detector.pixel_weight])
    np.testing.assert_allclose(detector.calibration_.scores, (each_against_the_others - np.log(2 * weights)).min(axis=1))


@pytest.mark.parametrize("rounding", [None, 1], ids=["distinct", "ties"])
def test_leaving_one_out_is_the_tail_probability_among_the_other_scores(rounding):
    from vaedetect.conformal import leave_one_out_log_tail_probability, log_tail_probability

    scores = np.random.RandomState(0).normal(size=57)
    scores = scores if rounding is None else np.round(scores, rounding)
    expected = [log_tail_probability(scores[i : i + 1], np.delete(scores, i))[0] for i in range(len(scores))]
    np.testing.assert_allclose(leave_one_out_log_tail_probability(scores), expected)


def test_a_tail_probability_is_empirical_inside_the_reference_and_exponential_below_it():
    from vaedetect.conformal import log_tail_probability

    reference = np.arange(1.0, 101.0)  # 100 scores; the tail is fitted to the lowest 10, mean distance 4.5 from 10
    np.testing.assert_allclose(np.exp(log_tail_probability([50.0, 10.0, 100.0], reference)), [51 / 101, 11 / 101, 1.0])
    np.testing.assert_allclose(log_tail_probability([5.5, -35.0], reference),
                               np.log(10 / 101) - np.array([4.5, 45.0]) / 4.5)
    assert np.isnan(log_tail_probability([np.nan], reference)).all()


def test_at_equal_weights_the_combined_score_is_the_smaller_log_tail_probability():
    from vaedetect.conformal import log_tail_probability

    detector = _detector(random_state=0, pixel_weight=0.5).fit(_images(120, 0))
    X = _images(10, 1)
    evidence = detector.evidence_scores(X)
    raw = np.column_stack([detector.pixel_.score_samples(X), detector.features_.score_samples(X)])
    expected = np.column_stack([log_tail_probability(raw[:, m], detector.reference_scores_[:, m]) for m in range(2)])
    np.testing.assert_allclose(evidence.to_numpy(), expected)
    np.testing.assert_allclose(detector.score_samples(X), expected.min(axis=1))
    assert list(evidence.columns) == ["pixels", "features"]


def test_pyods_training_scores_and_labels_are_the_combined_verdicts_of_the_images_fitted_on():
    X = _images(120, 0)
    detector = _detector(random_state=0).fit(X)
    np.testing.assert_allclose(detector.decision_scores_, -detector.score_samples(X), rtol=1e-6)
    np.testing.assert_array_equal(detector.labels_, (detector.predict(X) == -1).astype(int))
    assert detector.predict_proba(X[:5]).shape == (5, 2)


def test_the_false_positive_rate_of_the_combined_verdict_holds_on_fresh_normal_images():
    # 8 seeds, 180 combined calibration scores each: flagged at fpr=0.1 is k/(n+1) = 18/181 in expectation for
    # exchangeable scores (leaving one out makes them so up to one reference score in 180); the tolerance is
    # three standard errors of the mean over seeds (Beta spread of the threshold's rate, binomial spread of 600
    # fresh images)
    rates = []
    for seed in range(8):
        detector = _detector(random_state=seed, calibration_fraction=0.3).fit(_images(600, seed))
        detector.set_threshold(fpr=0.1)
        rates.append(np.mean(detector.predict(_images(600, 100 + seed)) == -1))
    k, n = 18, 180
    beta_sd = np.sqrt(k * (n + 1 - k) / ((n + 1) ** 2 * (n + 2)))
    tolerance = 3 * np.sqrt(beta_sd**2 + 0.1 * 0.9 / 600) / np.sqrt(len(rates))
    assert abs(np.mean(rates) - k / (n + 1)) < tolerance


def test_score_paths_says_which_evidence_flagged_each_file(tmp_path):
    for i, image in enumerate(_images(60, 0)):
        Image.fromarray((image * 255).astype(np.uint8)).save(tmp_path / f"normal_{i:02d}.png")
    rng = np.random.RandomState(1)
    for i in range(5):
        Image.fromarray(rng.randint(0, 256, size=(8, 8, 3)).astype(np.uint8)).save(tmp_path / f"noise_{i}.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    detector = _detector(random_state=0).fit(_images(120, 2))
    table = detector.score_paths(tmp_path)
    assert len(table) == 66 and table.loc[table["path"].str.endswith("broken.png"), "error"].item() != ""
    for row in table[table["error"] == ""].itertuples():
        below = [name for name, score in (("pixels", row.pixel_score), ("features", row.feature_score))
                 if score < detector.offset_]
        assert row.evidence == ("+".join(below) if row.is_outlier else "")
        assert row.score == min(row.pixel_score, row.feature_score)
    assert table.loc[table["path"].str.contains("noise_"), "is_outlier"].all()


def test_score_paths_draws_the_pixel_models_map_over_every_file_the_combined_verdict_flags(tmp_path):
    rng = np.random.RandomState(1)
    for i, image in enumerate(_images(20, 0)):
        Image.fromarray((image * 255).astype(np.uint8)).save(tmp_path / f"normal_{i:02d}.png")
    for i in range(4):
        Image.fromarray(rng.randint(0, 256, size=(8, 8, 3)).astype(np.uint8)).save(tmp_path / f"noise_{i}.png")
    detector = _detector(random_state=0).fit(_images(120, 2))
    table = detector.score_paths(tmp_path, maps_dir=tmp_path / "maps")
    assert list(table.columns[:6]) == ["path", "score", "p_value", "is_outlier", "error", "map"]
    assert ((table["map"] != "") == table["is_outlier"]).all() and table["is_outlier"].sum() >= 4
    assert sorted(path.name for path in (tmp_path / "maps").iterdir()) == sorted(
        Path(m).name for m in table.loc[table["is_outlier"], "map"])


def test_calibrating_on_files_reports_those_it_could_not_read_and_returns_the_detector(tmp_path):
    for i, image in enumerate(_images(30, 5)):
        Image.fromarray((image * 255).astype(np.uint8)).save(tmp_path / f"normal_{i:02d}.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    detector = _detector(random_state=0).fit(_images(120, 2))
    assert detector.calibrate_paths(tmp_path) is detector
    assert [Path(s.path).name for s in detector.skipped_files_] == ["broken.png"]
    assert len(detector.calibration_) == 30 and detector.calibration_.source == "calibrate(X)"


def test_a_combined_detector_needs_a_pixel_model_and_a_feature_model():
    with pytest.raises(ValueError, match="needs a pixel model"):
        CombinedDetector(VAEDetector(**PIXEL), VAEDetector(**PIXEL)).fit(_images(60, 0))


@needs_lite0
def test_a_combined_model_file_loads_to_the_same_verdicts_and_says_what_it_holds(tmp_path):
    detector = _detector(backbone=FeatureExtractor("efficientnet_lite0", image_size=32), random_state=0)
    detector.fit(_images(80, 0, side=16))
    detector.save(tmp_path / "m.vae")
    loaded = vaedetect.load(tmp_path / "m.vae")
    assert isinstance(loaded, CombinedDetector)
    X = _images(6, 1, side=16)
    np.testing.assert_allclose(loaded.score_samples(X), detector.score_samples(X))
    np.testing.assert_allclose(loaded.p_values(X), detector.p_values(X))
    with pytest.raises(ValueError, match="holds a CombinedDetector, not a VAEDetector"):
        VAEDetector.load(tmp_path / "m.vae")


@needs_lite0
def test_the_cli_fits_a_combined_model_and_reports_the_evidence(tmp_path):
    train = tmp_path / "train"
    train.mkdir()
    for i, image in enumerate(_images(50, 0, side=16)):
        Image.fromarray((image * 255).astype(np.uint8)).save(train / f"{i:02d}.png")
    model = tmp_path / "m.vae"
    fitted = CliRunner().invoke(main, ["fit", str(train), "-o", str(model), "--combined", "--image-size", "16",
                                       "--epochs", "2", "--latent-dim", "2", "--base-channels", "4", "--quiet",
                                       "--calibration-fraction", "0.2", "--seed", "0", "--pixel-weight", "0.3"])
    assert fitted.exit_code == 0, fitted.output
    assert vaedetect.load(model).pixel_weight == 0.3
    assert "the 10 held-out images are the two models' reference scores" in fitted.output
    scored = CliRunner().invoke(main, ["score", str(model), str(train), "-o", str(tmp_path / "s.csv"),
                                       "--report", str(tmp_path / "r.html")])
    assert scored.exit_code == 0, scored.output
    import pandas as pd

    table = pd.read_csv(tmp_path / "s.csv", keep_default_na=False)
    assert {"pixel_p_value", "feature_p_value", "evidence"} <= set(table.columns)
    report = (tmp_path / "r.html").read_text()
    assert "the smaller of the pixel model" in report
    assert f"<td><b>model trained on</b></td><td>{train}</td>" in report  # not "? samples"
    info = CliRunner().invoke(main, ["info", str(model)])
    assert "pixel model:" in info.output and "feature model:" in info.output and "efficientnet_lite0" in info.output
    mapped = CliRunner().invoke(main, ["score", str(model), str(train), "--maps", str(tmp_path / "maps"), "--threshold",
                                       "1", "-o", str(tmp_path / "m.csv")])  # log tail probabilities are <= 0: all flagged
    assert mapped.exit_code == 0, mapped.output
    assert len(list((tmp_path / "maps").iterdir())) == 50


def test_the_pixel_weight_divides_each_models_tail_probability_by_twice_its_share():
    from vaedetect.conformal import log_tail_probability

    detector = _detector(random_state=0, pixel_weight=0.2).fit(_images(120, 0))
    X = _images(10, 1)
    raw = np.column_stack([detector.pixel_.score_samples(X), detector.features_.score_samples(X)])
    tails = np.column_stack([log_tail_probability(raw[:, m], detector.reference_scores_[:, m]) for m in range(2)])
    np.testing.assert_allclose(detector.evidence_scores(X).to_numpy(), tails - np.log([0.4, 1.6]))


@needs_lite0
def test_a_model_file_keeps_the_pixel_weight_and_files_before_it_weigh_the_models_alike(tmp_path):
    detector = _detector(FeatureExtractor("efficientnet_lite0", image_size=32), random_state=0, pixel_weight=0.1)
    detector.fit(_images(120, 0))
    detector.save(tmp_path / "weighted.vae")
    loaded = vaedetect.load(tmp_path / "weighted.vae")
    assert loaded.pixel_weight == 0.1
    np.testing.assert_allclose(loaded.score_samples(_images(5, 1)), detector.score_samples(_images(5, 1)))
    older = vaedetect.load(Path(__file__).parent / "data" / "combined_format2.vae")
    assert older.pixel_weight == 0.5


def test_a_pixel_weight_without_combined_models_is_refused(tmp_path):
    for i, image in enumerate(_images(20, 0, side=16)):
        Image.fromarray((image * 255).astype(np.uint8)).save(tmp_path / f"{i:02d}.png")
    refused = CliRunner().invoke(main, ["fit", str(tmp_path), "-o", str(tmp_path / "m.vae"), "--pixel-weight", "0.3"])
    assert refused.exit_code == 2 and "--pixel-weight weighs the two models of --combined" in refused.output
