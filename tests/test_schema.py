"""The score table: one schema of columns and dtypes for files, table rows and the combined detector's evidence."""

import numpy as np
import pandas as pd
import pytest

from vaedetect import schema
from vaedetect.calibration import Calibration

from .conftest import write_squares


def _calibration():
    return Calibration(np.arange(9.0), "elbo", "held-out", {"threshold": 2.5})


def test_a_file_table_has_its_columns_in_order_and_each_dtype():
    table = schema.build({"path": ["b.png", "a.png", "c.png"], "score": [1.0, np.nan, 3.0],
                          "error": ["", "cannot decode", ""]}, _calibration())
    assert list(table.columns) == ["path", "score", "p_value", "is_outlier", "error"]
    assert table.dtypes.to_dict() == schema.empty().dtypes.to_dict()
    # a file that failed has no p-value and is no outlier; 1.0 lies below the threshold 2.5
    np.testing.assert_allclose(table["p_value"], [3 / 10, np.nan, 5 / 10])
    assert table["is_outlier"].tolist() == [True, False, False]


def test_a_row_table_keeps_the_callers_identifiers_with_their_own_type():
    values = {"path": ["t.csv"] * 2, "row": [0, 1], "id": np.array([17, 18]), "score": [5.0, 0.0],
              "top_features": ["a:1.0", "b:2.0"], "error": ["", ""]}
    table = schema.build(values, _calibration(), rows=True, id_column="id")
    assert list(table.columns) == ["path", "row", "id", "score", "p_value", "is_outlier", "top_features", "error"]
    assert table["id"].dtype == np.int64 and table["row"].dtype == np.int64
    assert list(schema.empty(rows=True).columns) == ["path", "row", "score", "p_value", "is_outlier", "top_features",
                                                     "error"]


def test_the_combined_detector_adds_each_models_evidence_after_the_common_columns():
    columns = list(schema.columns(maps=True, evidence=True))
    assert columns[:6] == ["path", "score", "p_value", "is_outlier", "error", "map"]
    assert columns[6:] == ["pixel_score", "feature_score", "pixel_raw_score", "feature_raw_score", "pixel_p_value",
                           "feature_p_value", "evidence"]


def test_score_paths_returns_exactly_the_schemas_columns_and_dtypes(fitted_images, tmp_path):
    detector, _ = fitted_images
    write_squares(tmp_path / "new", 3, seed=1)
    (tmp_path / "new" / "broken.png").write_bytes(b"not a png")
    detector = detector.set_params(channels=3)
    table = detector.score_paths(tmp_path / "new", maps_dir=tmp_path / "maps")
    expected = schema.empty(maps=True)
    assert list(table.columns) == list(expected.columns) and table.dtypes.equals(expected.dtypes)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_every_format_writes_names_that_are_not_utf8_as_text(tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    name = b"caf\xe9.png".decode("utf-8", "surrogateescape")
    table = schema.build({"path": [name], "score": [1.0], "error": [""]}, _calibration())
    schema.write(table, tmp_path / f"t{suffix}")
    reader = {".csv": pd.read_csv, ".jsonl": lambda p: pd.read_json(p, lines=True), ".parquet": pd.read_parquet}
    assert reader[suffix](tmp_path / f"t{suffix}")["path"].tolist() == ["caf\\xe9.png"]


def test_an_unknown_extension_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="unknown extension '.xlsx'"):
        schema.write(schema.empty(), tmp_path / "t.xlsx")
