"""
Inside the model: interpolation and the latent space
====================================================

A fitted detector is a generative model too. ``interpolate`` decodes a path between the latent codes of
two images, ``sample`` decodes draws from the prior, and ``latent_pca`` projects latent codes on their
principal components, here coloured by digit.
"""

# %%
import numpy as np
from sklearn.datasets import load_digits

from vaedetect import VAEDetector, plotting

digits, labels = load_digits(return_X_y=True)
images = np.kron(np.rint(digits.reshape(-1, 8, 8) * (255 / 16)).astype(np.uint8), np.ones((1, 2, 2), dtype=np.uint8))
detector = VAEDetector(latent_dim=8, base_channels=8, n_stages=2, epochs=30, random_state=0).fit(images[:1200])

# %%
# From a zero to a one
# --------------------
# Spherical interpolation (the default) keeps the intermediate codes at the norm typical of the prior.
zero, one = images[labels == 0][0], images[labels == 1][0]
path = detector.interpolate(zero, one, steps=10)
plotting.image_grid(path, ncols=10, title="interpolate(zero, one, steps=10)")

# %%
# Draws from the prior
# --------------------
plotting.image_grid(detector.sample(16, random_state=0), ncols=8, title="sample(16)")

# %%
# The latent space
# ----------------
# The codes of the held-out digits, projected on their first two principal components.
held_out = slice(1200, None)
pca, coordinates = detector.latent_pca(images[held_out])
ax = plotting.latent_scatter(coordinates, labels=labels[held_out])
ax.set_title(f"latent PCA: {pca.explained_variance_ratio_.sum():.0%} of the variance in two components")
