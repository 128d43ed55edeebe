import json
import re
from pathlib import Path
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

import vaedetect
from tests.conftest import TINY, write_squares
from vaedetect.cli import main
from vaedetect.images import load_images

FIT_ARGS = ["--image-size", "8", "--channels", "1", "--latent-dim", "2", "--base-channels", "4",
            "--n-stages", "2", "--epochs", "2", "--n-samples", "2", "--mixed-precision", "off", "--seed", "0",
            "--quiet"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model fitted by the CLI on 30 images plus one corrupt file, and a folder to score."""
    root = tmp_path_factory.mktemp("cli")
    write_squares(root / "train", 30, seed=0)
    (root / "train" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    write_squares(root / "new" / "normal", 6, seed=1)
    write_squares(root / "new" / "odd", 4, seed=2, bright=False)
    (root / "new" / "odd" / "corrupt.jpg").write_text("no jpeg here")
    result = CliRunner().invoke(main, ["fit", str(root / "train"), "-o", str(root / "model.vae"), *FIT_ARGS])
    assert result.exit_code == 0, result.output
    return root, result


def _score(*args):
    return CliRunner().invoke(main, ["score", *map(str, args)])


def test_fit_reports_images_used_and_skipped(trained):
    root, result = trained
    assert "Trained on 30 images (1 skipped)" in result.output
    assert "broken.png" in result.output
    assert (root / "model.vae").is_file()


def test_fit_says_how_the_images_were_split_and_what_the_calibration_reaches(trained):
    _, result = trained
    # 30 images: 3 for early stopping, 3 to calibrate, which reach no false-positive rate under 1/4
    assert "24 to train the network, 3 for early stopping; calibration: 3 scores of normal data held out " \
           "from training and early stopping; the smallest reachable false-positive rate (and p-value) is 1/4" \
           in result.output


def test_score_paths_shows_progress_on_request_only(trained, capsys):
    root, _ = trained
    detector = vaedetect.load(root / "model.vae")
    detector.score_paths(root / "new")
    assert "scoring" not in capsys.readouterr().err
    detector.score_paths(root / "new", progress=True)
    err = capsys.readouterr().err
    assert "scoring (image): 100%" in err and "11/11" in err  # 10 images and 1 corrupt file


def test_a_verbose_fit_names_its_stages_after_training(capsys):
    vaedetect.VAEDetector(**TINY, verbose=1).fit(np.random.RandomState(0).normal(size=(120, 5)))
    err = capsys.readouterr().err
    stages = ["computing the reference statistics of 96 training samples", "calibrating the threshold on 12 held-out"]
    assert all(stage in err for stage in stages)
    assert err.index(stages[0]) < err.index(stages[1])


def test_fit_options_reach_the_estimator(trained):
    root, _ = trained
    detector = vaedetect.load(root / "model.vae")
    assert (detector.image_size, detector.channels, detector.latent_dim, detector.epochs) == (8, 1, 2, 2)
    assert detector.mixed_precision is False
    assert detector.layout_.shape == (1, 8, 8)


def test_score_writes_one_row_per_file_sorted_with_error_rows(trained):
    root, _ = trained
    result = _score(root / "model.vae", root / "new", "-o", root / "scores.csv")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(root / "scores.csv", keep_default_na=False)
    assert list(table.columns) == ["path", "score", "p_value", "is_outlier", "error"]
    assert len(table) == 11
    assert list(table["path"]) == sorted(table["path"])
    bad = table[table["path"].str.endswith("corrupt.jpg")].iloc[0]
    assert bad["score"] == "" and bad["p_value"] == "" and "not an image" in bad["error"]
    assert (table.drop(bad.name)["error"] == "").all()


def test_cli_scores_equal_python_scores(trained):
    root, _ = trained
    _score(root / "model.vae", root / "new" / "normal", "-o", root / "normal.jsonl")
    table = pd.read_json(root / "normal.jsonl", lines=True)
    detector = vaedetect.load(root / "model.vae")
    images, used, _ = load_images(sorted(table["path"]), 8, 1)
    np.testing.assert_allclose(table.set_index("path").loc[used, "score"], detector.score_samples(images), rtol=1e-6)


def test_model_from_fit_scores_the_same_in_a_new_process(trained):
    root, _ = trained
    code = ("import sys, vaedetect; d = vaedetect.load(sys.argv[1]); "
            "print(d.score_paths(sys.argv[2])['score'].to_json(orient='values'))")
    out = subprocess.run([sys.executable, "-c", code, str(root / "model.vae"), str(root / "new" / "normal")],
                         capture_output=True, text=True, check=True).stdout
    here = vaedetect.load(root / "model.vae").score_paths(root / "new" / "normal")["score"]
    np.testing.assert_allclose(json.loads(out), here, rtol=1e-6)


def test_outliers_give_exit_code_one_only_when_asked(trained):
    root, _ = trained
    assert _score(root / "model.vae", root / "new", "--threshold", "1e9").exit_code == 0
    result = _score(root / "model.vae", root / "new", "--threshold", "1e9", "--fail-on-outlier")
    assert result.exit_code == 1
    clean = root / "new" / "normal"
    assert _score(root / "model.vae", clean, "--threshold", "-1e9", "--fail-on-outlier").exit_code == 0


def test_unreadable_files_fail_the_gate_with_exit_code_three_unless_ignored(trained):
    root, _ = trained  # root/new holds one corrupt file and, below this threshold, no outlier
    result = _score(root / "model.vae", root / "new", "--threshold", "-1e9", "--fail-on-outlier")
    assert result.exit_code == 3
    assert "0 outliers, 1 could not be scored" in result.output and "failing: 1 files" in result.output
    ignored = _score(root / "model.vae", root / "new", "--threshold", "-1e9", "--fail-on-outlier", "--ignore-errors")
    assert ignored.exit_code == 0


def test_threshold_and_contamination_override_the_stored_threshold(trained):
    root, _ = trained
    everything = _score(root / "model.vae", root / "new" / "normal", "--threshold", "1e9")
    assert "6 outliers" in everything.output
    nothing = _score(root / "model.vae", root / "new" / "normal", "--threshold", "-1e9")
    assert "0 outliers" in nothing.output
    assert _score(root / "model.vae", root / "new", "--contamination", "0.5").exit_code == 0
    assert _score(root / "model.vae", root / "new", "--contamination", "0.9").exit_code == 2
    assert _score(root / "model.vae", root / "new", "--fpr", "0.5").exit_code == 0
    assert _score(root / "model.vae", root / "new", "--fpr", "0.1", "--threshold", "0").exit_code == 2


def test_warnings_are_one_line_without_source_code(tmp_path):
    write_squares(tmp_path / "train", 20, seed=0)
    result = CliRunner().invoke(main, ["fit", str(tmp_path / "train"), "-o", str(tmp_path / "m.vae"), *FIT_ARGS,
                                       "--skip-connections", "on"])
    assert result.exit_code == 0, result.output
    warning = [line for line in result.output.splitlines() if "skip_connections=True" in line]
    assert len(warning) == 1 and warning[0].startswith("warning: ")
    assert "warnings.warn(" not in result.output and ".py:" not in result.output


def test_top_prints_the_most_anomalous_first(trained):
    root, _ = trained
    result = _score(root / "model.vae", root / "new", "--top", "3")
    assert result.exit_code == 0
    top = result.output.split("most anomalous:")[1]
    assert top.count(".png") == 3


def test_table_goes_to_stdout_without_output_file(trained):
    root, _ = trained
    result = _score(root / "model.vae", root / "new" / "normal")
    assert result.output.count("img_") == 6 and "is_outlier" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["score", "{root}/model.vae", "{root}/missing"], "missing' does not exist"),
        (["score", "{root}/nope.vae", "{root}/new"], "nope.vae"),
        (["score", "{root}/new/normal/img_000.png", "{root}/new"], "not a readable vaedetect model"),
        (["score", "{root}/model.vae", "{root}/new", "-o", "{root}/out.xlsx"], "unknown extension"),
        (["fit", "{root}/missing", "-o", "{root}/m.vae"], "does not exist"),
        (["fit", "{root}/new", "-o", "{root}/m.vae", "--channels", "2"], "--channels"),
    ],
)
def test_usage_errors_exit_with_two_naming_the_problem(trained, args, message):
    root, _ = trained
    result = CliRunner().invoke(main, [a.format(root=root) for a in args])
    assert result.exit_code == 2
    assert message in result.output


def test_fit_on_a_folder_without_images_is_a_clear_error(tmp_path):
    (tmp_path / "readme.txt").write_text("nothing here")
    result = CliRunner().invoke(main, ["fit", str(tmp_path), "-o", str(tmp_path / "m.vae"), *FIT_ARGS])
    assert result.exit_code == 2
    assert "Found 0 images" in result.output


def test_no_half_written_output_after_an_interrupt(trained, monkeypatch):
    root, _ = trained
    target = root / "interrupted.csv"

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_csv", interrupted)
    _score(root / "model.vae", root / "new", "-o", target)
    assert not target.exists()
    assert not list(root.glob(".interrupted.csv.*"))


def test_info_shows_parameters_threshold_and_training_data(trained):
    root, _ = trained
    result = CliRunner().invoke(main, ["info", str(root / "model.vae")])
    assert result.exit_code == 0
    assert "latent_dim = 2" in result.output and "threshold:" in result.output
    assert "score:        bits_typicality" in result.output  # what score_method="auto" resolved to
    assert "training:     30 samples: 24 to train, 3 for early stopping, 3 to calibrate" in result.output
    assert "found, 1 skipped)" in result.output


@pytest.mark.parametrize("args", [["--help"], ["fit", "--help"], ["score", "--help"], ["info", "--help"]])
def test_help_does_not_import_torch(args):
    code = (
        "import sys\n"
        "from vaedetect.cli import main\n"
        f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported by --help'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


def test_version():
    assert vaedetect.__version__ in CliRunner().invoke(main, ["--version"]).output


def test_demo_trains_scores_and_writes_model_and_csv(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path), "--epochs", "3"])
    assert result.exit_code == 0, result.output
    assert "ROC AUC" in result.output
    scores = pd.read_csv(tmp_path / "scores.csv")
    # 88 held-out zeros, 10 of each other digit, 10 crops of each of the 2 sample photos
    assert scores["kind"].value_counts().to_dict() == {"zeros": 88, "other_digits": 90, "photos": 20}
    assert (tmp_path / "model.vae").stat().st_size > 0


def test_parquet_output_needs_pyarrow_or_round_trips(trained):
    root, _ = trained
    result = _score(root / "model.vae", root / "new", "-o", root / "scores.parquet")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        assert result.exit_code == 2 and "pyarrow" in result.output
        return
    assert result.exit_code == 0
    assert len(pd.read_parquet(root / "scores.parquet")) == 11


def test_maps_are_written_for_flagged_files_only(trained):
    root, _ = trained
    maps = root / "maps"
    result = _score(root / "model.vae", root / "new", "--threshold", "1e9", "--maps", maps, "-o", root / "m.csv")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(root / "m.csv", keep_default_na=False)
    flagged = table[table["is_outlier"] == True]  # noqa: E712
    assert len(flagged) == 10 and sorted(p.name for p in maps.iterdir()) == sorted(Path(m).name for m in flagged["map"])
    assert (table.loc[table["is_outlier"] == False, "map"] == "").all()  # noqa: E712
    with Image.open(flagged["map"].iloc[0]) as overlay:
        assert overlay.mode == "RGB" and min(overlay.size) >= 128


def test_maps_carry_a_colour_bar_on_the_models_shared_scale(trained, tmp_path):
    root, _ = trained
    result = _score(root / "model.vae", root / "new" / "normal", "--threshold", "1e9", "--maps", tmp_path / "maps")
    assert result.exit_code == 0, result.output
    sizes = {Image.open(path).size for path in (tmp_path / "maps").iterdir()}
    assert len(sizes) == 1 and next(iter(sizes))[0] > next(iter(sizes))[1]  # the overlay plus the bar beside it
    assert vaedetect.load(root / "model.vae").map_scale_ is not None


def test_maps_of_a_folder_with_nothing_flagged_are_no_crash(trained, tmp_path):
    root, _ = trained
    result = _score(root / "model.vae", root / "new" / "normal", "--threshold", "-1e9", "--maps", tmp_path / "maps",
                    "-o", tmp_path / "s.csv")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "s.csv", keep_default_na=False)
    assert len(table) == 6 and (table["map"] == "").all()
    assert list((tmp_path / "maps").iterdir()) == []


def test_fit_options_are_every_estimator_parameter_with_its_real_default_and_choices():
    # the CLI spells its options out so that --help need not import torch; keep them in step
    from vaedetect.cli import _FIT_OPTIONS, _spelt

    defaults = vaedetect.VAEDetector().get_params()
    assert {parameter for _, parameter, *_ in _FIT_OPTIONS} == set(defaults) - {"image_shape", "verbose"}
    constraints = vaedetect.VAEDetector._parameter_constraints
    for _, parameter, kind, default, _ in _FIT_OPTIONS:
        assert default == defaults[parameter], parameter
        if hasattr(kind, "choices"):
            allowed = {str(v) for c in constraints[parameter] for v in getattr(c, "options", ())}
            if "boolean" in constraints[parameter]:
                allowed |= {"on", "off"}
            assert set(kind.choices) == allowed, parameter
            assert default is None or _spelt(default) in kind.choices, parameter


def test_fit_help_shows_each_real_default():
    text = CliRunner().invoke(main, ["fit", "--help"], terminal_width=200).output
    for expected in ("[default: 64]", "[default: leaky_relu]", "[default: on]", "[default: 1e-05]"):
        assert expected in text
    assert "VAEDetector's" not in text


def test_boolean_fit_options_reach_the_estimator(tmp_path):
    write_squares(tmp_path / "train", 20, seed=0)
    result = CliRunner().invoke(main, ["fit", str(tmp_path / "train"), "-o", str(tmp_path / "m.vae"), *FIT_ARGS,
                                       "--residual", "off", "--early-stopping", "off", "--weight-decay", "0.01"])
    assert result.exit_code == 0, result.output
    detector = vaedetect.load(tmp_path / "m.vae")
    assert (detector.residual, detector.early_stopping, detector.weight_decay) == (False, False, 0.01)


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_generate_writes_a_grid_of_the_requested_size(trained, tmp_path):
    root, _ = trained
    result = _invoke("generate", root / "model.vae", "-n", 6, "-o", tmp_path / "grid.png", "--seed", 1)
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "grid.png") as image:
        # 6 tiles of 8 px in a 3 x 2 grid with 1 px gaps, enlarged 8x so each tile is 64 px
        assert image.size == ((3 * 9 - 1) * 8, (2 * 9 - 1) * 8)


def test_interpolate_writes_a_strip_framed_by_its_inputs(trained, tmp_path):
    root, _ = trained
    start, end = root / "new" / "normal" / "img_000.png", root / "new" / "odd" / "img_000.png"
    result = _invoke("interpolate", root / "model.vae", start, end, "--steps", 5, "-o", tmp_path / "strip.png")
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "strip.png") as image:
        assert image.size == ((7 * 9 - 1) * 8, 8 * 8)
        strip = np.asarray(image.convert("L"))
    first = np.asarray(load_images([str(start)], 8, 1)[0][0, ..., 0])
    np.testing.assert_array_equal(strip[:64:8, :64:8], first)


def test_interpolate_names_an_unreadable_input(trained, tmp_path):
    root, _ = trained
    broken = root / "new" / "odd" / "corrupt.jpg"
    result = _invoke("interpolate", root / "model.vae", broken, broken, "-o", tmp_path / "strip.png")
    assert result.exit_code == 2 and "corrupt.jpg" in result.output


def test_pca_plots_the_folders(trained, tmp_path):
    root, _ = trained
    result = _invoke("pca", root / "model.vae", root / "new", "-o", tmp_path / "pca.png")
    assert result.exit_code == 0, result.output
    assert "latent PCA of 10 images" in result.output
    assert "corrupt.jpg" in result.output  # reported as skipped
    with Image.open(tmp_path / "pca.png") as image:
        assert min(image.size) > 200


def test_score_writes_an_html_report(trained, tmp_path):
    root, _ = trained
    result = _invoke("score", root / "model.vae", root / "new", "-o", tmp_path / "s.csv", "--contamination", 0.2,
                     "--report", tmp_path / "report.html", "--report-top", 3)
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report.html").read_text()
    assert "--contamination 0.2" in page
    assert len(re.findall(r'<div class="card( outlier)?">', page)) == 6


def test_written_files_get_the_usual_permissions(trained, tmp_path):
    import os

    root, _ = trained
    mask = os.umask(0o022)
    try:
        result = _invoke("score", root / "model.vae", root / "new", "-o", tmp_path / "s.csv")
    finally:
        os.umask(mask)
    assert result.exit_code == 0, result.output
    # what a plain open() gives under that umask, not the owner-only mode of a temporary file
    assert (tmp_path / "s.csv").stat().st_mode & 0o777 == 0o644


def test_fit_preset_sets_the_tutorial_recipe_and_options_override_it(trained, tmp_path):
    root, _ = trained
    result = CliRunner().invoke(main, ["fit", str(root / "train"), "-o", str(tmp_path / "sharp.vae"), *FIT_ARGS,
                                       "--preset", "sharp", "--perceptual-weight", "0"])
    assert result.exit_code == 0, result.output
    detector = vaedetect.load(tmp_path / "sharp.vae")
    assert (detector.loss, detector.kl_schedule, detector.augment, detector.spatial_latent) == ("sharp", "cyclical", True, True)
    # the explicit options win over the preset's 64 channels and 4 stages
    assert (detector.base_channels, detector.n_stages, detector.perceptual_weight) == (4, 2, 0)


def test_preset_choices_match_the_estimator_presets():
    from vaedetect.estimator import PRESETS

    preset = next(p for p in main.commands["fit"].params if p.name == "preset")
    assert set(preset.type.choices) == set(PRESETS)
