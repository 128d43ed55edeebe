"""Tabular files on the command line: fit on a CSV or Parquet table, score the rows of others."""

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import vaedetect
from vaedetect.cli import main
from vaedetect.tables import score_table_file

FIT_ARGS = ["--latent-dim", "2", "--epochs", "5", "--seed", "0", "--quiet", "--id-column", "id"]


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    """A model fitted on 300 normal rows with an id column, and 20 new rows: row 3 has a missing value,
    row 5 a far outlier."""
    root = tmp_path_factory.mktemp("tables")
    rng = np.random.RandomState(0)
    train = pd.DataFrame(rng.normal(size=(300, 4)), columns=list("abcd"))
    train.insert(0, "id", [f"t{i}" for i in range(300)])
    train.to_csv(root / "train.csv", index=False)
    new = pd.DataFrame(rng.normal(size=(20, 4)), columns=list("abcd"))
    new.insert(0, "id", [f"n{i}" for i in range(20)])
    new.loc[3, "b"] = np.nan
    new.loc[5, "c"] = 40.0
    new.to_csv(root / "new.csv", index=False)
    result = _cli("fit", root / "train.csv", "-o", root / "tab.vae", *FIT_ARGS)
    assert result.exit_code == 0, result.output
    assert "Trained on 300 rows of 4 features" in result.output
    return root


def test_a_table_fits_on_its_numeric_columns_by_name(rows):
    detector = vaedetect.load(rows / "tab.vae")
    assert detector.layout_.kind == "tabular" and list(detector.feature_names_in_) == list("abcd")


def test_scoring_a_table_keeps_ids_and_reports_rows_it_cannot_score(rows, tmp_path):
    result = _cli("score", rows / "tab.vae", rows / "new.csv", "--id-column", "id", "-o", tmp_path / "s.csv",
                  "--fail-on-outlier")
    assert result.exit_code == 1, result.output  # row 5 is an outlier
    assert "20 rows:" in result.output and "1 could not be scored" in result.output
    table = pd.read_csv(tmp_path / "s.csv").fillna({"error": "", "top_features": ""})
    assert list(table.columns) == ["path", "row", "id", "score", "p_value", "is_outlier", "top_features", "error"]
    assert list(table["id"]) == [f"n{i}" for i in range(20)] and list(table["row"]) == list(range(20))
    assert table.loc[3, "error"] == "column 'b' is missing or infinite" and np.isnan(table.loc[3, "score"])
    assert table["score"].idxmin() == 5 and table.loc[5, "is_outlier"]
    # row 5 is far out in column c alone: c leads its explanation
    assert table.loc[5, "top_features"].startswith("c:") and table.loc[3, "top_features"] == ""


def test_table_scores_equal_the_python_scores_and_parquet_reads_the_same(rows, tmp_path):
    detector = vaedetect.load(rows / "tab.vae")
    new = pd.read_csv(rows / "new.csv")
    new.to_parquet(tmp_path / "new.parquet")
    expected = detector.score_samples(new.drop(columns="id").drop(index=3))
    for path in (rows / "new.csv", tmp_path / "new.parquet"):
        table = score_table_file(detector, path, id_column="id", chunk_rows=7)  # chunks of CSV rows
        np.testing.assert_allclose(table["score"].drop(index=3), expected, rtol=1e-6, atol=1e-6)  # scores near 0


def test_rows_with_missing_values_are_refused_for_fitting_naming_the_first(rows, tmp_path):
    result = _cli("fit", rows / "new.csv", "-o", tmp_path / "m.vae", *FIT_ARGS)
    assert result.exit_code == 2
    assert "1 rows cannot be fitted on, the first row 3 (from 0): column 'b' is missing or infinite" in result.output


@pytest.mark.parametrize("args, message", [
    (["fit", "{root}/train.csv", "-o", "{tmp}/m.vae", "--quiet"], "column(s) ['id'] are not numeric"),
    (["fit", "{root}/train.csv", "{root}/new.csv", "-o", "{tmp}/m.vae"], "one .csv or .parquet table alone"),
    (["score", "{root}/tab.vae", "{root}/new.csv", "--id-column", "nope"], "has no column 'nope'"),
    (["score", "{root}/tab.vae", "{root}"], "fitted on a table: give .csv or .parquet files"),
    (["score", "{root}/tab.vae", "{root}/new.csv", "--id-column", "id", "--maps", "{tmp}/maps"], "for image models"),
])
def test_tabular_usage_errors_are_one_line(rows, tmp_path, args, message):
    result = _cli(*[a.format(root=rows, tmp=tmp_path) for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
