"""
Which columns made a row anomalous
==================================

For a table, ``feature_contributions`` splits the decoder's evidence about each row over the columns, in nats: 0
where the model reconstructs the column exactly, large where the column deviates in the column's own learned
scale (a row's contributions sum to minus its reconstruction probability, less a constant). The score printed
beside them is the detector's own, ``min_evidence`` for tables. Here two
of five columns are tied together in normal rows; anomalous rows break that tie or take an extreme value.
"""

# %%
import numpy as np
import pandas as pd

from vaedetect import VAEDetector

rng = np.random.default_rng(0)
n = 1000
load = rng.normal(50, 10, n)
rows = pd.DataFrame({"load": load, "power": 2 * load + rng.normal(0, 2, n), "temperature": rng.normal(20, 3, n),
                     "vibration": rng.gamma(2, 1, n), "door_open": rng.integers(0, 2, n)})
detector = VAEDetector(random_state=0).fit(rows)

# %%
# Three rows to explain
# ---------------------
new = pd.DataFrame({"load": [50.0, 50.0, 52.0], "power": [101.0, 160.0, 103.0], "temperature": [21.0, 20.0, 45.0],
                    "vibration": [2.0, 1.5, 2.2], "door_open": [0, 1, 0]},
                   index=["ordinary", "power does not match load", "overheating"])
contributions, scores = detector.feature_contributions(new, return_scores=True)
print(pd.Series(scores, index=new.index, name="score").round(1))
print(contributions.round(1))

# %%
# The same, as a picture
# ----------------------
ax = contributions.T.plot.bar(figsize=(8, 4), rot=0)
ax.set_ylabel("contribution to the anomaly, nats")
ax.set_title("feature_contributions: each row's reconstruction evidence over the columns")
