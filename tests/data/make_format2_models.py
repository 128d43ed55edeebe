"""Write the format-2 model files of tests/data and the scores they gave when written.

Run once, with vaedetect at commit 30da8a1 (the last to write format 2, a ``torch.save`` archive), from the
repository root: ``python -m tests.data.make_format2_models``. Later versions write safetensors files and
cannot run it; ``tests/test_model_files.py`` checks that these files still load and score as recorded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
# Tiny networks: each file is a few kilobytes.
TINY = dict(latent_dim=2, base_channels=4, n_stages=2, epochs=3, n_samples=2, batch_size=16, random_state=0)


def table_rows(seed: int, n: int) -> np.ndarray:
    """Rows of 5 correlated columns; the probe rows of seed 1 add 6 far out in their last column."""
    rng = np.random.RandomState(seed)
    rows = rng.normal(size=(n, 5))
    rows[:, 1] += rows[:, 0]
    return rows


def probe_rows() -> np.ndarray:
    rows = table_rows(1, 30)
    rows[-6:, 4] += 8.0
    return rows


def images(seed: int, n: int, side: int = 12) -> np.ndarray:
    """uint8 RGB photos ``(n, side, side, 3)``: a bright square on a dark, noisy ground."""
    rng = np.random.RandomState(seed)
    out = rng.randint(0, 40, size=(n, side, side, 3)).astype(np.uint8)
    for image, (row, col) in zip(out, rng.randint(0, side - 5, size=(n, 2))):
        image[row : row + 5, col : col + 5] = 220
    return out


def probe_images() -> np.ndarray:
    """Twenty normal images, five of noise and five flat grey ones."""
    rng = np.random.RandomState(2)
    noise = rng.randint(0, 256, size=(5, 12, 12, 3)).astype(np.uint8)
    flat = np.full((5, 12, 12, 3), 128, dtype=np.uint8)
    return np.concatenate([images(3, 20), noise, flat])


def _record(detector, X) -> dict:
    return {"score_samples": detector.score_samples(X).tolist(), "offset": float(detector.offset_),
            "p_values": detector.p_values(X).tolist()}


def main() -> None:
    from vaedetect import CombinedDetector, VAEDetector
    from vaedetect.backbones import FeatureExtractor

    extractor = FeatureExtractor("efficientnet_lite0", stages=("stage1",), image_size=32)
    models = {
        "table": (VAEDetector(**TINY).fit(table_rows(0, 200)), probe_rows()),
        # one network, as every table model was before members existed
        "table_one_member": (VAEDetector(**TINY, n_estimators=1, learning_rate=5e-4).fit(table_rows(0, 200)),
                             probe_rows()),
        "image": (VAEDetector(**TINY).fit(images(0, 120)), probe_images()),
        "features": (VAEDetector(backbone=extractor, **TINY).fit(images(0, 120)), probe_images()),
        "combined": (CombinedDetector(VAEDetector(**TINY), VAEDetector(backbone=extractor, **TINY),
                                      calibration_fraction=0.2, random_state=0).fit(images(0, 120)), probe_images()),
    }
    expected = {}
    for name, (detector, X) in models.items():
        detector.save(HERE / f"{name}_format2.vae")
        expected[name] = _record(detector, X)
    (HERE / "format2_scores.json").write_text(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    main()
