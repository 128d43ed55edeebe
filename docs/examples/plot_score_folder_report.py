"""
Scoring a folder of images and reading the report
=================================================

The command line's job, from Python: train on a folder of known-good images, score a folder of new ones,
and read the score table and the HTML report. The images are scikit-learn's handwritten digits, written
to a temporary folder: zeros are normal, and the folder to score mixes new zeros with other digits.
"""

# %%
# Folders of images
# -----------------
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

digits, labels = load_digits(return_X_y=True)
images = np.rint(digits.reshape(-1, 8, 8) * (255 / 16)).astype(np.uint8)
work = Path(tempfile.mkdtemp())
for i, (image, label) in enumerate(zip(images, labels)):
    if label == 0 and i % 2 == 0:
        folder = work / "good"
    elif label == 0 or i % 12 == 1:  # held-out zeros, and a few of every other digit
        folder = work / "incoming" / ("zeros" if label == 0 else "other_digits")
    else:
        continue
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / f"digit{label}_{i:04d}.png")
(work / "incoming" / "broken.png").write_bytes(b"not an image")  # reported, never a crash
print(sorted(path.name for path in (work / "incoming").iterdir()))

# %%
# Fit once, score many times
# --------------------------
# ``score_paths`` returns one row per file, sorted by path: the score (higher = more normal), its conformal
# p-value, the verdict and, for files that could not be read, why.
from vaedetect import VAEDetector

detector = VAEDetector(image_size=16, channels=1, latent_dim=8, base_channels=8, n_stages=2, epochs=40,
                       calibration_fraction=0.2, random_state=0).fit_paths(work / "good")
table = detector.score_paths(work / "incoming")
table["folder"] = [Path(path).parent.name for path in table["path"]]
read = table[table["error"] == ""]
print(read.groupby("folder")["is_outlier"].mean().rename("share flagged"))
print(table[table["error"] != ""][["path", "error"]])

# %%
# The most anomalous files
# ------------------------
from vaedetect import plotting

scored = read.sort_values("score")
worst = detector.read_images(scored["path"][:16].tolist())[0]
plotting.image_grid(worst, ncols=8, title="lowest scores first")

# %%
# The report
# ----------
# ``write_report`` writes the page of ``vaedetect score --report``: one self-contained HTML file with the
# histogram, the most anomalous and most normal files beside their anomaly maps, and the latent PCA.
import vaedetect

report = work / "report.html"
vaedetect.write_report(report, detector, table.drop(columns="folder"), top=8)
print(f"{report.name}: {report.stat().st_size // 1024} KiB, self-contained")
