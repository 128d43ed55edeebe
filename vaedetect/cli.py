"""The ``vaedetect`` command: thin wrappers over the public Python API.

Heavy imports (torch, scikit-learn, pandas) happen inside the commands, so ``vaedetect --help`` is fast.
"""

from __future__ import annotations

from pathlib import Path

import click

from . import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vaedetect")
def main():
    """Find anomalies and out-of-distribution inputs with variational autoencoders."""


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("vaedetect-demo"),
              show_default=True, help="Folder for the model file and the scores CSV.")
@click.option("--normal-digit", type=click.IntRange(0, 9), default=0, show_default=True,
              help="The digit treated as normal; all others are anomalies.")
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def demo(out: Path, normal_digit: int, epochs: int, seed: int):
    """Train on one digit of scikit-learn's bundled 8x8 digits, score all digits, report ROC AUC.

    Needs no download: the data ship with scikit-learn.
    """
    import numpy as np
    import pandas as pd
    from sklearn.datasets import load_digits
    from sklearn.metrics import roc_auc_score

    from .estimator import VAEDetector

    digits, labels = load_digits(return_X_y=True)
    images = (digits / 16.0).reshape(-1, 8, 8)  # float images must lie in [0, 1]
    is_train = np.arange(len(images)) % 2 == 0
    train = images[is_train & (labels == normal_digit)]
    test, test_labels = images[~is_train], labels[~is_train]

    click.echo(f"Training on {len(train)} images of the digit {normal_digit} ({epochs} epochs)...")
    detector = VAEDetector(latent_dim=8, base_channels=8, n_stages=2, epochs=epochs, random_state=seed)
    detector.fit(train)
    scores = detector.score_samples(test)
    flagged = detector.predict(test) == -1
    auc = roc_auc_score(test_labels != normal_digit, -scores)

    out.mkdir(parents=True, exist_ok=True)
    detector.save(out / "digits.vae")
    table = pd.DataFrame({"index": np.flatnonzero(~is_train), "digit": test_labels, "score": scores,
                          "is_outlier": flagged})
    table.sort_values("score").to_csv(out / "scores.csv", index=False)

    click.echo(f"ROC AUC, digit {normal_digit} against the others: {auc:.3f}")
    click.echo("Share flagged as outlier, by digit:")
    for digit, share in table.groupby("digit")["is_outlier"].mean().items():
        click.echo(f"  {digit}: {share:6.1%}")
    click.echo(f"Model written to {out / 'digits.vae'}, scores to {out / 'scores.csv'}.")
