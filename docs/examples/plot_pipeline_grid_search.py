"""
Choosing settings with a few labelled anomalies
===============================================

A detector is fitted without labels, but a handful of labelled anomalies is often at hand, and they are the
best judge of its settings. :func:`vaedetect.metrics.anomaly_roc_auc` is a scikit-learn scorer: it ranks
samples by ``score_samples`` (lower is more anomalous) against labels where 1 marks an anomaly, so
``GridSearchCV`` can compare settings by how well they separate the labelled anomalies.

Here the normal rows are the benign tumours of scikit-learn's breast-cancer table and a few malignant ones
play the anomalies.
"""

# %%
# Data: benign tumours are normal, 20 malignant ones are the anomalies
# --------------------------------------------------------------------
import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split

features, malignant = load_breast_cancer(return_X_y=True)
malignant = malignant == 0  # scikit-learn codes malignant as 0
rng = np.random.default_rng(0)
keep = ~malignant | np.isin(np.arange(len(malignant)), rng.choice(np.flatnonzero(malignant), 20, replace=False))
X, y = features[keep], malignant[keep].astype(int)  # y: 1 = anomaly
X_search, X_test, y_search, y_test = train_test_split(X, y, test_size=0.4, stratify=y, random_state=0)
print(f"{len(X_search)} rows to search on ({y_search.sum()} anomalies), {len(X_test)} to test on")

# %%
# The search: each setting is fitted on two folds and judged on the third
# -----------------------------------------------------------------------
# ``fit`` ignores the labels; only the scorer reads them. Stratified folds keep anomalies in every fold.
from vaedetect import VAEDetector
from vaedetect.metrics import anomaly_roc_auc

search = GridSearchCV(VAEDetector(epochs=15, n_estimators=1, random_state=0),
                      {"latent_dim": [2, 8], "likelihood": ["gaussian", "laplace"]},
                      scoring=anomaly_roc_auc, cv=StratifiedKFold(3, shuffle=True, random_state=0))
search.fit(X_search, y_search)
for params, score in zip(search.cv_results_["params"], search.cv_results_["mean_test_score"]):
    print(f"{params}: mean ROC AUC {score:.3f}")
print("best:", search.best_params_)

# %%
# The chosen detector on rows it has never seen
# ---------------------------------------------
# The labels chose the settings, so they must not also set the threshold: the detector keeps the threshold
# calibrated on its own held-out training rows (or call ``calibrate`` with more normal data).
import matplotlib.pyplot as plt

from vaedetect import plotting

detector = search.best_estimator_
scores = detector.score_samples(X_test)
print(f"test ROC AUC {anomaly_roc_auc(detector, X_test, y_test):.3f}")
figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
plotting.roc_curve(y_test == 1, scores, ax=left)
plotting.score_histogram(scores, threshold=detector.offset_, labels=np.where(y_test == 1, "malignant", "benign"),
                         ax=right)
figure.tight_layout()
