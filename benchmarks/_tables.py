"""Results shared by the detector suites: one entry per data set (or normal class), runs per method.

An entry is ``{"n_train", "n_test", "anomaly_share", "methods": {method: [run, ...]}}`` and a run is
``{"seed", "roc_auc", "average_precision", "fit_seconds", "score_seconds"}``, anomalies the positive
class and every score higher = more normal.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def roc_auc_against(normal_scores, other_scores) -> float:
    """ROC AUC of telling ``other_scores`` (the anomalies) from ``normal_scores``, every score higher = more
    normal: the chance that an anomaly scores below a normal sample."""
    normal, other = np.asarray(normal_scores, dtype=float), np.asarray(other_scores, dtype=float)
    return float(roc_auc_score(np.r_[np.zeros(len(normal)), np.ones(len(other))], -np.r_[normal, other]))


def evaluation(is_anomaly, scores, **fields) -> dict:
    """One run: ROC AUC and average precision of ``scores`` (higher = more normal), plus ``fields``."""
    return {**fields, "roc_auc": float(roc_auc_score(is_anomaly, -np.asarray(scores))),
            "average_precision": float(average_precision_score(is_anomaly, -np.asarray(scores)))}


def log_means(prefix: str, entry: dict, log=print) -> None:
    for method, runs in entry["methods"].items():
        aucs = [r["roc_auc"] for r in runs]
        log(f"{prefix} {method}: ROC AUC {np.mean(aucs):.3f} ± {np.std(aucs):.3f}")


def summary(results: dict) -> dict[str, dict[str, float]]:
    """Mean over seeds per data set and method, and the mean over data sets."""
    table = {}
    for name, entry in results.items():
        for method, runs in entry["methods"].items():
            row = table.setdefault(method, {})
            row[name] = float(np.mean([r["roc_auc"] for r in runs]))
    for row in table.values():
        row["mean"] = float(np.mean([row[name] for name in results]))
    return table


def merge(entries: list[dict], name: str) -> dict:
    """One entry from the entries of several runs of the same data set, e.g. different seeds run in
    different sessions. A seed that two of them measured is refused rather than counted twice."""
    merged = {key: value for key, value in entries[0].items() if key not in ("methods", "far_ood")}
    merged["methods"] = {}
    if "far_ood" in entries[0]:
        merged["far_ood"] = {}
    for entry in entries:
        if any(entry[key] != merged[key] for key in ("n_train", "n_test", "anomaly_share")):
            raise ValueError(f"{name}: the runs to merge used different data ({entry['n_train']} / "
                             f"{entry['n_test']} vs {merged['n_train']} / {merged['n_test']})")
        for method, runs in entry["methods"].items():
            seen = {r["seed"] for r in merged["methods"].get(method, [])}
            repeated = seen & {r["seed"] for r in runs}
            if repeated:
                raise ValueError(f"{name}: seed {sorted(repeated)[0]} of {method} appears in two runs")
            merged["methods"].setdefault(method, []).extend(runs)
        for ood_set, methods in entry.get("far_ood", {}).items():
            for method, runs in methods.items():
                merged["far_ood"].setdefault(ood_set, {}).setdefault(method, []).extend(runs)
    return merged


def seeds_of(entry: dict) -> list[int]:
    return sorted({run["seed"] for runs in entry["methods"].values() for run in runs})


def seeds_text(results: dict) -> str:
    """``"seeds 0, 1, 2"``: every seed any data set of ``results`` was run with."""
    seeds = sorted({seed for entry in results.values() for seed in seeds_of(entry)})
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(map(str, seeds))


def markdown_table(columns, rows) -> str:
    """A markdown table: a header of ``columns`` and one line per row of cells (formatted by the caller)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])


def markdown(results: dict) -> str:
    names = list(results)
    methods_ = list(next(iter(results.values()))["methods"])
    seeds = {name: seeds_of(results[name]) for name in names}
    # after a merge of partial runs, say which rows rest on fewer seeds
    uneven = len({tuple(s) for s in seeds.values()}) > 1
    lines = [
        "| data set (n train / test, anomalies) | " + " | ".join(methods_) + " |",
        "|---|" + "---|" * len(methods_),
    ]
    for name in names:
        entry = results[name]
        cells = []
        for method in methods_:
            runs = entry["methods"][method]
            auc, ap = ([r[key] for r in runs] for key in ("roc_auc", "average_precision"))
            seconds = np.mean([r["fit_seconds"] + r["score_seconds"] for r in runs])
            spread = f" ± {np.std(auc):.3f}" if len(runs) > 1 and np.std(auc) >= 5e-4 else ""
            cells.append(f"{np.mean(auc):.3f}{spread} (AP {np.mean(ap):.3f}, {seconds:.1f} s)")
        which = f"; seeds {', '.join(map(str, seeds[name]))}" if uneven else ""
        lines.append(f"| {name} ({entry['n_train']} / {entry['n_test']}, {entry['anomaly_share']:.1%}{which}) | "
                     + " | ".join(cells) + " |")
    means = summary(results)
    lines.append("| **mean ROC AUC** | " + " | ".join(f"**{means[m]['mean']:.3f}**" for m in methods_) + " |")
    return "\n".join(lines)
