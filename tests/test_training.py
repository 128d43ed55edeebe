import pytest
import torch

from vaedetect.networks import VAE, NetworkConfig
from vaedetect.settings import epochs_within_budget, resolve_batch_size
from vaedetect.training import TrainConfig, augment_images, resolve_device, train


def _blobs(n=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=generator) * torch.tensor([3.0, 2.0, 1.0, 1.0, 0.5, 0.1])


def _fit(config, seed=0, x_val=None):
    torch.manual_seed(seed)
    model = VAE((6,), NetworkConfig(latent_dim=2, base_channels=8, n_stages=2))
    history = train(model, _blobs(), x_val, config, torch.Generator().manual_seed(seed))
    return model, history


def test_loss_falls_during_training():
    _, history = _fit(TrainConfig(epochs=30, batch_size=16, learning_rate=3e-3, kl_schedule="constant"))
    # the loss is a negative ELBO in nats: a fall of 2 nats per 6-d sample is a large gain
    assert history[-1]["loss"] < history[0]["loss"] - 2.0


def test_history_records_terms_learning_rate_and_time():
    _, history = _fit(TrainConfig(epochs=3), x_val=_blobs(16, seed=1))
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert set(history[0]) >= {"loss", "reconstruction", "kl", "val_loss", "kl_weight", "lr", "seconds"}
    # cosine annealing from the tutorial's 5e-4 towards 1e-6
    assert history[0]["lr"] == pytest.approx(5e-4)
    assert history[0]["lr"] > history[1]["lr"] > history[2]["lr"] > 1e-6


def test_same_seed_gives_identical_training():
    first, _ = _fit(TrainConfig(epochs=2), seed=3)
    second, _ = _fit(TrainConfig(epochs=2), seed=3)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)


def test_early_stopping_ends_training_and_restores_best_weights(monkeypatch):
    import copy
    import types

    from vaedetect import training

    snapshots = []  # every copy of the weights training keeps, i.e. one per new best validation loss

    def keep(state):
        snapshot = copy.deepcopy(state)
        snapshots.append(copy.deepcopy(snapshot))
        return snapshot

    monkeypatch.setattr(training, "copy", types.SimpleNamespace(deepcopy=keep))
    # learning rate so large that validation loss stops improving quickly
    config = TrainConfig(epochs=50, learning_rate=0.5, n_iter_no_change=2, kl_schedule="constant")
    model, history = _fit(config, x_val=_blobs(16, seed=1))
    assert len(history) < 50
    losses = [h["val_loss"] for h in history]
    improvements = [i for i, loss in enumerate(losses) if loss < min(losses[:i], default=float("inf"))]
    assert len(snapshots) == len(improvements) and improvements[-1] == losses.index(min(losses))
    assert improvements[-1] < len(losses) - 1  # later epochs were worse: their weights must be dropped
    # the model holds the weights of the best epoch, not of the last one
    best_state = snapshots[-1]
    assert all(torch.equal(value, best_state[name]) for name, value in model.state_dict().items())


def test_mixed_precision_trains_float32_weights_to_about_the_float32_loss():
    # bfloat16 autocast is what CUDA GPUs get by default; the CPU runs the same code path, slowly
    config = dict(epochs=30, batch_size=16, learning_rate=3e-3, kl_schedule="constant")
    full, full_history = _fit(TrainConfig(**config))
    mixed, mixed_history = _fit(TrainConfig(**config, mixed_precision=True))
    assert all(p.dtype == torch.float32 for p in mixed.parameters())
    assert mixed_history[-1]["loss"] < mixed_history[0]["loss"] - 2.0
    # bfloat16 keeps 8 bits of mantissa: the end point differs, the fit is as good
    assert mixed_history[-1]["loss"] == pytest.approx(full_history[-1]["loss"], rel=0.05)
    assert mixed_history[-1]["loss"] != full_history[-1]["loss"]


def test_augmentation_keeps_shape_range_and_is_reproducible():
    x = torch.rand(16, 3, 12, 12) * 2 - 1
    a = augment_images(x, torch.Generator().manual_seed(0))
    b = augment_images(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape
    assert a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b)
    assert not torch.equal(a, x)


def test_augmentation_draws_per_image():
    x = torch.rand(1, 1, 8, 8).expand(64, 1, 8, 8) * 2 - 1
    out = augment_images(x, torch.Generator().manual_seed(0))
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    # about half the copies of the same image are flipped, not all or none of them
    assert 10 < int(flipped.sum()) < 54


def test_auto_device_falls_back_to_cpu_without_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_unavailable_or_unknown_device_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device='cuda:1' was asked for"):
        resolve_device("cuda:1")
    with pytest.raises(ValueError, match="'device' parameter"):
        resolve_device("gpu please")


@pytest.mark.parametrize(
    ("n_train", "expected"),
    [(450, 25), (3200, 25), (3201, 24), (4500, 17), (50_000, 1)],  # a CIFAR-10 class is 4,500 after validation
)
def test_epoch_budget_caps_optimiser_steps_for_large_training_sets(n_train, expected):
    epochs = epochs_within_budget(n_train, batch_size=32, max_epochs=25, max_steps=2500)
    assert epochs == expected
    assert epochs == 1 or epochs * -(-n_train // 32) <= 2500


@pytest.mark.parametrize("kind", ["image", "features"])
def test_auto_batch_size_of_images_and_backbone_features_is_32(kind):
    assert resolve_batch_size("auto", kind, 100_000) == 32


@pytest.mark.parametrize(("n_train", "batch_size"), [(100, 32), (512, 32), (513, 33), (4000, 250), (4096, 256),
                                                     (10**7, 256)])
def test_auto_batch_size_of_a_table_makes_an_epoch_16_steps_of_at_most_256_rows(n_train, batch_size):
    assert resolve_batch_size("auto", "tabular", n_train) == batch_size


def test_a_batch_size_given_is_kept():
    assert resolve_batch_size(64, "tabular", 4000) == 64


def test_train_config_defaults_are_the_estimators():
    from dataclasses import fields

    from vaedetect import VAEDetector
    from vaedetect.settings import AUTO_MAX_EPOCHS

    params = VAEDetector().get_params()
    shared = [field for field in fields(TrainConfig) if field.name in params and params[field.name] != "auto"]
    assert len(shared) >= 8
    assert {field.name: field.default for field in shared} == {field.name: params[field.name] for field in shared}
    assert TrainConfig().epochs == AUTO_MAX_EPOCHS  # the most epochs="auto" trains
    assert TrainConfig().batch_size == resolve_batch_size("auto", "image", 1000)


def test_an_epoch_ends_at_its_step_budget_on_a_random_share_of_the_rows():
    from vaedetect.training import _batches

    generator = torch.Generator().manual_seed(0)
    batches = list(_batches(1000, 32, generator, max_batches=5))
    rows = torch.cat(batches)
    assert len(batches) == 5 and len(rows) == 160 and len(set(rows.tolist())) == 160
    assert [len(b) for b in _batches(100, 32, generator, max_batches=5)] == [32, 32, 32, 4]  # fewer rows: all


def test_each_member_of_a_network_clips_its_own_gradient():
    from vaedetect.training import _clip_gradients

    model = VAE((4,), NetworkConfig(latent_dim=2, base_channels=4, n_stages=2, members=2))
    for parameter in model.parameters():
        parameter.grad = torch.empty_like(parameter)
        parameter.grad.view(2, -1)[0] = 10.0  # the first member's gradient is far above the norm of 1
        parameter.grad.view(2, -1)[1] = 1e-4  # the second's far below
    _clip_gradients(model, max_norm=1.0)
    blocks = [parameter.grad.view(2, -1) for parameter in model.parameters()]
    first = torch.stack([block[0].pow(2).sum() for block in blocks]).sum().sqrt()
    assert float(first) == pytest.approx(1.0, rel=1e-4)
    assert all(bool((block[1] == 1e-4).all()) for block in blocks)  # untouched, as if trained alone
