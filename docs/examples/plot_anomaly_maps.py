"""
Where an image is anomalous: anomaly maps
=========================================

``anomaly_map`` gives each pixel's cost under the model, ``-log p(x|z)``; with ``relative=True`` it is the
cost above what the same place costs in normal images, as ``vaedetect score --maps`` and the report draw it.
A detector trained on handwritten zeros looks at zeros with a blot painted on them.
"""

# %%
import numpy as np
from sklearn.datasets import load_digits

from vaedetect import VAEDetector, plotting

digits, labels = load_digits(return_X_y=True)
zeros = np.rint(digits[labels == 0].reshape(-1, 8, 8) * (255 / 16)).astype(np.uint8)
zeros = np.kron(zeros, np.ones((1, 2, 2), dtype=np.uint8))  # 16x16 pixels
train, test = zeros[:140], zeros[140:148]
detector = VAEDetector(latent_dim=8, base_channels=8, n_stages=2, epochs=40, random_state=0).fit(train)

# %%
# A blot where a zero has none
# ----------------------------
blotted = test.copy()
blotted[:, 6:10, 6:10] = 255
scores = detector.score_samples(np.concatenate([test, blotted]))
print(f"median score: clean {np.median(scores[:8]):.1f}, blotted {np.median(scores[8:]):.1f} (higher = more normal)")

# %%
# The maps, on one colour scale
# -----------------------------
# Top row: the clean zeros; bottom row: the same zeros with the blot. ``map_scale_`` gives every map the
# colours of the calibration images, so a normal image looks cool and an anomalous one hot.
import matplotlib.pyplot as plt

images = np.concatenate([test, blotted])
maps = detector.anomaly_map(images, relative=True)
figure, ax = plt.subplots(figsize=(8, 2.4))
plotting.anomaly_overlays(images, maps, scale=detector.map_scale_, ncols=8, ax=ax)
