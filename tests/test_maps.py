"""Anomaly maps and the pictures drawn from them."""


import numpy as np
import pytest

import vaedetect


def test_anomaly_map_points_at_the_anomalous_patch(dark_detector):
    detector, X = dark_detector
    image = X[:1].copy()
    image[0, 6:9, 2:5] = 255
    heat = detector.anomaly_map(image)[0]
    row, col = np.unravel_index(np.argmax(heat), heat.shape)
    assert 6 <= row < 9 and 2 <= col < 5
    assert heat[6:9, 2:5].mean() > 2 * np.median(heat)  # a tiny, briefly trained model: scale still wide


@pytest.mark.parametrize("per_channel", [False, True])
def test_anomaly_map_shapes(fitted_images, per_channel):
    detector, X = fitted_images  # (n, 10, 10, 3) uint8
    maps = detector.anomaly_map(X[:4], per_channel=per_channel)
    assert maps.shape == ((4, 10, 10, 3) if per_channel else (4, 10, 10))
    if per_channel:
        np.testing.assert_allclose(maps.sum(-1), detector.anomaly_map(X[:4]), rtol=1e-5)


def test_anomaly_map_is_for_image_pixels_only_and_says_why(fitted_tabular):
    detector, X = fitted_tabular
    assert not hasattr(detector, "anomaly_map")
    with pytest.raises(AttributeError, match="has no attribute 'anomaly_map'") as raised:
        detector.anomaly_map(X)
    assert "needs the pixel model" in str(raised.value.__cause__) and "a table of 5 columns" in str(raised.value.__cause__)


def test_heatmap_overlay_is_enlarged_rgb_and_hot_where_the_map_peaks():
    from vaedetect.plotting import heatmap_overlay

    image = np.zeros((8, 8, 1), dtype=np.uint8)
    heat = np.zeros((8, 8))
    heat[2, 5] = 3.0
    overlay = heatmap_overlay(image, heat, min_side=32)
    assert overlay.shape == (32, 32, 3) and overlay.dtype == np.uint8
    hot, cold = overlay[2 * 4, 5 * 4], overlay[0, 0]
    assert hot.sum() > cold.sum() + 200


def test_a_shared_map_scale_draws_a_cost_by_its_value_not_by_its_rank():
    from vaedetect.plotting import heatmap_overlay

    image = np.zeros((8, 8, 1), dtype=np.uint8)
    mild, strong = np.full((8, 8), 1.0), np.full((8, 8), 9.0)
    mild[0, 0] = strong[0, 0] = 0.0
    # scaled to themselves both maps look alike; on one scale the strong one is hotter everywhere
    assert np.array_equal(heatmap_overlay(image, mild, min_side=8), heatmap_overlay(image, strong, min_side=8))
    on_scale = [heatmap_overlay(image, heat, scale=(0.0, 10.0), min_side=8) for heat in (mild, strong)]
    assert on_scale[1][1:].astype(int).sum() > on_scale[0][1:].astype(int).sum() + 8 * 7 * 100
    with_bar = heatmap_overlay(image, mild, scale=(0.0, 10.0), min_side=32, colour_bar=True)
    assert with_bar.shape[0] == 32 and with_bar.shape[1] > 32


def test_map_pictures_show_the_excess_over_the_calibration_images_and_survive_saving(dark_detector, fitted_tabular,
                                                                                    tmp_path):
    detector, X = dark_detector
    low, high = detector.map_scale_
    assert detector.map_baseline_.shape == (12, 12) and low == 0.0 < high
    excess = detector.anomaly_map(X, relative=True)
    np.testing.assert_allclose(excess, detector.anomaly_map(X) - detector.map_baseline_)
    assert np.mean(excess <= high) > 0.99  # normal images: almost every pixel below the hottest colour
    patched = X[:1].copy()
    patched[0, 4:8, 4:8] = 255  # a bright patch where the training images are dark
    assert detector.anomaly_map(patched, relative=True)[0, 4:8, 4:8].min() > high
    detector.save(tmp_path / "m.vae")
    loaded = vaedetect.load(tmp_path / "m.vae")
    assert loaded.map_scale_ == [low, high]
    np.testing.assert_allclose(loaded.map_baseline_, detector.map_baseline_, rtol=1e-6)
    assert fitted_tabular[0].map_scale_ is None and fitted_tabular[0].map_baseline_ is None
