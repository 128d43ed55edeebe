"""README's Python snippets, run as written on small data made in a temporary folder."""

import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from vaedetect.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def _write_photos(folder, n, seed):
    rng = np.random.RandomState(seed)
    folder.mkdir(parents=True)
    for i in range(n):
        image = rng.randint(0, 60, size=(64, 64, 3)).astype(np.uint8)
        image[16:48, 16:48] = (200, 120, 40)
        Image.fromarray(image).save(folder / f"photo_{i:02d}.png")


@pytest.fixture
def readme_world(tmp_path, monkeypatch):
    """The files and arrays the snippets name: photos/good, incoming/ (one file corrupt), scores.csv
    from `vaedetect score`, and tabular X_normal and X."""
    monkeypatch.chdir(tmp_path)
    _write_photos(tmp_path / "photos" / "good", 10, seed=0)
    _write_photos(tmp_path / "incoming", 3, seed=1)
    (tmp_path / "incoming" / "broken.jpg").write_bytes(b"not a jpeg")
    fit = CliRunner().invoke(main, ["fit", "photos/good", "-o", "cli.vae", "--image-size", "16", "--base-channels",
                                    "4", "--n-stages", "2", "--epochs", "2", "--seed", "0", "--quiet"])
    assert fit.exit_code == 0, fit.output
    scored = CliRunner().invoke(main, ["score", "cli.vae", "incoming/", "-o", "scores.csv", "--threshold", "1e9"])
    assert scored.exit_code == 0, scored.output
    rng = np.random.RandomState(0)
    return {"X_normal": rng.normal(size=(200, 4)), "X": rng.normal(size=(20, 4))}


def test_the_readme_has_the_snippets_this_test_runs():
    snippets = _python_snippets()
    assert len(snippets) == 2 and "read_csv" in snippets[0] and "VAEDetector" in snippets[1]


def test_the_pandas_snippet_reads_a_numeric_score_column(readme_world):
    namespace = dict(readme_world)
    exec(_python_snippets()[0], namespace)
    scores = namespace["scores"]
    assert scores["score"].dtype == float and scores["is_outlier"].dtype == bool
    assert list(scores.loc[scores.error != "", "path"]) == ["incoming/broken.jpg"]
    assert scores[scores.is_outlier].sort_values("score")["score"].is_monotonic_increasing


@pytest.mark.filterwarnings("ignore:fpr=0.01 needs at least")  # 10 photos hold out 1: expected here
def test_the_python_snippet_runs_as_written(readme_world):
    namespace = dict(readme_world)
    exec(_python_snippets()[1], namespace)
    assert Path("model.vae").is_file() and "vaedetect report" in Path("report.html").read_text(encoding="utf-8")
    assert len(namespace["table"]) == 4 and namespace["coords"].shape == (3, 2)
