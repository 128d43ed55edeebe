"""Two settings of vaedetect side by side, from saved benchmark results.

A default (the number of epochs, say) is chosen by accuracy per CPU-minute: this puts each data set's
ROC AUC and training time under both settings in one table, on the seeds both runs measured, so that
a seed run under one setting only cannot tilt the comparison::

    python -m benchmarks compare --suite cifar10 --labels "30 epochs" "25 epochs" \\
        --before OLD.json [OLD2.json ...] --after NEW.json [NEW2.json ...] --markdown docs/PAGE.md
"""

from __future__ import annotations

import numpy as np


def _common_runs(before: list[dict], after: list[dict]) -> tuple[list[dict], list[dict]]:
    seeds = {run["seed"] for run in before} & {run["seed"] for run in after}
    return [run for run in before if run["seed"] in seeds], [run for run in after if run["seed"] in seeds]


def side_by_side(before: dict, after: dict, method: str = "vaedetect") -> dict[str, dict]:
    """``{data set: {"seeds", "roc_auc": (before, after), "fit_seconds": (before, after)}}``, means
    over the seeds both suites' results measured; data sets without a common seed are left out."""
    rows = {}
    for name in before:
        if name not in after:
            continue
        old, new = _common_runs(before[name]["methods"][method], after[name]["methods"][method])
        if not old:
            continue
        rows[name] = {"seeds": sorted({run["seed"] for run in old}),
                      **{key: (float(np.mean([r[key] for r in old])), float(np.mean([r[key] for r in new])))
                         for key in ("roc_auc", "fit_seconds")}}
    return rows


def markdown(rows: dict[str, dict], labels: tuple[str, str]) -> str:
    lines = [f"| data set (seeds) | ROC AUC, {labels[0]} | ROC AUC, {labels[1]} | fit s, {labels[0]} | "
             f"fit s, {labels[1]} |", "|---|---|---|---|---|"]
    for name, row in rows.items():
        (auc_old, auc_new), (fit_old, fit_new) = row["roc_auc"], row["fit_seconds"]
        seeds = ", ".join(map(str, row["seeds"]))
        lines.append(f"| {name} ({seeds}) | {auc_old:.3f} | {auc_new:.3f} | {fit_old:.0f} | {fit_new:.0f} |")
    means = [np.mean([row[key][i] for row in rows.values()]) for key in ("roc_auc", "fit_seconds") for i in (0, 1)]
    slowest = [max(row["fit_seconds"][i] for row in rows.values()) for i in (0, 1)]
    lines.append(f"| **mean** | **{means[0]:.3f}** | **{means[1]:.3f}** | {means[2]:.0f} | {means[3]:.0f} |")
    lines.append(f"| **slowest** | | | {slowest[0]:.0f} | {slowest[1]:.0f} |")
    return "\n".join(lines)
