"""The modality: decided once in fit, it says what the detector can do; methods it lacks are gated in one place."""

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from vaedetect import CombinedDetector, VAEDetector
from vaedetect.backbones import FeatureExtractor
from vaedetect.modality import FeatureModality, ImageModality, TabularModality

from .conftest import TINY, tiny_backbone

GATED = {"anomaly_map": "pixels", "score_paths": "images", "read_images": "images", "calibrate_paths": "images",
         "inverse_transform": "decodes", "sample": "decodes", "reconstruct": "decodes", "interpolate": "decodes",
         "feature_contributions": "contributions"}
# the capabilities of each modality, as the table of vaedetect/modality.py gives them
CAPABILITIES = {"image": {"pixels", "images", "decodes"}, "tabular": {"decodes", "contributions"},
                "features": {"images"}}


@pytest.fixture(scope="module")
def detectors(fitted_images, fitted_tabular):
    photos = np.random.RandomState(0).randint(0, 256, size=(60, 16, 16, 3)).astype(np.uint8)
    features = VAEDetector(**TINY, backbone=FeatureExtractor(tiny_backbone(), image_size=16)).fit(photos)
    return {"image": fitted_images[0], "tabular": fitted_tabular[0], "features": features}


@pytest.mark.parametrize("kind", list(CAPABILITIES))
def test_a_detector_has_exactly_the_methods_its_modality_can_do(detectors, kind):
    detector = detectors[kind]
    assert detector.modality_.name == kind
    for method, capability in GATED.items():
        assert hasattr(detector, method) == (capability in CAPABILITIES[kind]), method
        assert getattr(detector.modality_, capability) == (capability in CAPABILITIES[kind])


def test_an_unavailable_method_says_why_once_for_its_capability(detectors):
    detector = detectors["tabular"]
    causes = set()
    for method in ("score_paths", "read_images", "calibrate_paths"):
        with pytest.raises(AttributeError, match=f"'VAEDetector' has no attribute '{method}'") as raised:
            getattr(detector, method)
        causes.add(str(raised.value.__cause__))
    assert causes == {"This method takes images; this detector models the rows of a table of 5 columns."}


def test_before_fit_no_gated_method_is_available_and_using_one_says_it_is_not_fitted():
    detector = VAEDetector()
    assert not any(hasattr(detector, method) for method in GATED)
    with pytest.raises(AttributeError) as raised:
        detector.anomaly_map(np.zeros((1, 8, 8)))
    assert isinstance(raised.value.__cause__, NotFittedError)


def test_the_modality_is_decided_by_fit_and_changing_parameters_afterwards_changes_nothing(detectors):
    detector = detectors["image"]
    modality = detector.modality_
    detector.set_params(backbone="efficientnet_lite0", image_shape=(1, 10, 10))
    try:
        assert detector.modality_ is modality and hasattr(detector, "anomaly_map")
    finally:
        detector.set_params(backbone=None, image_shape=None)


def test_each_kind_of_input_gets_its_modality_and_its_auto_settings(detectors):
    assert isinstance(detectors["image"].modality_, ImageModality)
    assert isinstance(detectors["tabular"].modality_, TabularModality)
    assert isinstance(detectors["features"].modality_, FeatureModality)
    settings = {kind: detector.settings_ for kind, detector in detectors.items()}
    assert [settings[k].likelihood for k in ("image", "tabular", "features")] == ["gaussian", "laplace", "gaussian"]
    assert [settings[k].scaling for k in ("image", "tabular", "features")] == ["standard", "standard", "common"]
    assert [settings[k].score_method for k in ("image", "tabular", "features")] == ["bits_typicality", "min_evidence",
                                                                                    "residual"]


def test_a_combined_detector_draws_maps_and_decodes_with_its_pixel_model(tmp_path):
    images = np.random.RandomState(0).uniform(0.2, 0.8, size=(80, 8, 8, 3)).astype(np.float32)
    detector = CombinedDetector(VAEDetector(**TINY), VAEDetector(**TINY, backbone=FeatureExtractor(tiny_backbone(),
                                                                                                    image_size=8)),
                                random_state=0, calibration_fraction=0.2).fit(images)
    modality = detector.modality_
    assert (modality.pixels, modality.images, modality.decodes, modality.contributions) == (True, True, True, False)
    np.testing.assert_array_equal(detector.anomaly_map(images[:2]), detector.pixel_.anomaly_map(images[:2]))
    assert detector.sample(3, random_state=0).shape == (3, 8, 8, 3)
    assert "features of backbone 'Sequential'" in modality.describe()
