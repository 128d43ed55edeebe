"""The score table: one row per image file or table row scored, as ``score_paths``, ``vaedetect score``,
Dask and the report read it. Its columns, their types and their order are defined here, once.

=====================  ========  ===========================================================================
column                 dtype     what it holds
=====================  ========  ===========================================================================
``path``               object    the file (kept as Python holds its name; written as text by ``write``)
``row``                int64     tables: the row's number in its file, from 0
(``--id-column``)      as read   tables: the identifier column named by the caller
``score``              float64   higher = more normal; NaN where the entry could not be scored, -inf where
                                 the model could not evaluate it
``p_value``            float64   split-conformal p-value against the calibration scores; NaN without a score
``is_outlier``         bool      ``score`` below the threshold
``top_features``       object    tables: the columns that lower the score most, ``name:nats;...``
``error``              object    empty, or why the entry could not be scored
``map``                object    with ``maps_dir``: the overlay written for a flagged image, else empty
``pixel_score`` ...    float64   combined detector: each model's log tail probability (``pixel_score``,
                                 ``feature_score``), own score (``*_raw_score``) and own p-value (``*_p_value``)
``evidence``           object    combined detector: the models whose evidence flagged the file, e.g. "pixels"
=====================  ========  ===========================================================================
"""

from __future__ import annotations

from pathlib import Path

from ._files import as_text, write_atomically

# Torch- and numpy-free at import: the command line reads SUFFIXES before its heavy imports.
_FLOAT, _TEXT = "float64", "object"
_VERDICTS = {"score": _FLOAT, "p_value": _FLOAT, "is_outlier": "bool"}
_EVIDENCE = {"pixel_score": _FLOAT, "feature_score": _FLOAT, "pixel_raw_score": _FLOAT, "feature_raw_score": _FLOAT,
             "pixel_p_value": _FLOAT, "feature_p_value": _FLOAT, "evidence": _TEXT}
# Text cells a spreadsheet would evaluate (OWASP, "CSV injection"): a CSV file writes them after a single quote.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# The formats a score table is written in, by the extension of its path.
SUFFIXES = (".csv", ".parquet", ".jsonl")


def columns(*, rows: bool = False, id_column: str | None = None, maps: bool = False,
            evidence: bool = False) -> dict[str, str]:
    """The columns of a score table, in order, with their dtypes: of image files, or of table ``rows``
    (with the caller's ``id_column``, whose dtype is the file's), with the ``map`` column of ``maps`` and
    the two models' ``evidence`` of a combined detector."""
    if not rows:
        return {"path": _TEXT, **_VERDICTS, "error": _TEXT, **({"map": _TEXT} if maps else {}),
                **(_EVIDENCE if evidence else {})}
    identifier = {id_column: _TEXT} if id_column is not None else {}
    return {"path": _TEXT, "row": "int64", **identifier, **_VERDICTS, "top_features": _TEXT, "error": _TEXT}


def empty(**kind) -> "pandas.DataFrame":  # noqa: F821
    """A score table without rows (:func:`columns`' keywords)."""
    import pandas as pd

    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in columns(**kind).items()})


def build(values: dict, calibration, **kind) -> "pandas.DataFrame":  # noqa: F821
    """The score table of ``values`` (every column of :func:`columns` but the verdicts, which come from the
    ``score`` column and ``calibration``, a :class:`~vaedetect.calibration.Calibration`)."""
    import numpy as np
    import pandas as pd

    values = {**values, **calibration.verdicts(values["score"])}
    table = pd.DataFrame({name: _column(values[name], dtype) for name, dtype in columns(**kind).items()})
    if kind.get("id_column") is not None:  # the identifiers keep the file's own type
        table[kind["id_column"]] = np.asarray(values[kind["id_column"]])
    return table


def _column(values, dtype: str):
    import numpy as np
    import pandas as pd

    # object columns hold text as Python holds it: a name that is not UTF-8 is a str that Arrow strings would refuse
    return pd.Series(list(values) if dtype == _TEXT else np.asarray(values, dtype=dtype), dtype=dtype)


def as_written(table, convert) -> "pandas.DataFrame":  # noqa: F821
    """``table`` with ``convert`` (e.g. ``_files.as_text``) applied to the text of its text columns (paths, errors,
    maps, the caller's identifiers: anything a file name or a table's cell brought in) and to its column names."""
    from pandas.api.types import is_object_dtype, is_string_dtype

    table = table.copy()
    for column in table.columns:
        if is_object_dtype(table[column]) or is_string_dtype(table[column]):
            table[column] = table[column].map(lambda value: convert(value) if isinstance(value, str) else value)
    return table.rename(columns=lambda name: convert(name) if isinstance(name, str) else name)


def _neutralised(value: str) -> str:
    return f"'{value}" if value.startswith(FORMULA_STARTS) else value


def text(table, table_format: str, *, header: bool = True) -> str:
    """``table`` as CSV or JSON lines text (``table_format``), as :func:`write` writes it; ``header`` for CSV."""
    table = as_written(table, as_text)
    if table_format == "csv":
        return as_written(table, _neutralised).to_csv(index=False, header=header)
    # pandas writes every "/" in a string as "\/", which JSON allows and readers of paths trip on: unescaping
    # all of them is exact, since no other "\/" can occur in its output
    return table.to_json(orient="records", lines=True, double_precision=15).replace("\\/", "/")


def write_parts(parts, path: Path) -> None:
    """Write the score tables ``parts``, one after the other, as one table at ``path`` (CSV, Parquet or JSON lines
    by its extension), atomically: memory holds one part at a time, and a failure or an interruption while they
    are made leaves ``path`` as it was.

    Names that are not valid UTF-8 are written with each undecodable byte as ``\\xNN``. In CSV, a text cell that
    a spreadsheet would evaluate (starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) is written
    after a single quote; JSON lines and Parquet keep every value exactly.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"-o {str(path)!r}: unknown extension {suffix!r}; use {', '.join(SUFFIXES)}.")
    write_atomically(path, lambda tmp: _parquet(parts, tmp) if suffix == ".parquet" else _texts(parts, tmp, suffix[1:]))


def _texts(parts, file, table_format: str) -> None:
    with open(file, "w", encoding="utf-8", newline="") as out:
        for index, part in enumerate(parts):
            out.write(text(part, table_format, header=index == 0))


def _parquet(parts, file) -> None:
    import pyarrow
    import pyarrow.parquet as parquet

    writer = None
    try:
        for part in parts:  # every part in the first one's schema (an id column's type is the file's first chunk's)
            table = pyarrow.Table.from_pandas(as_written(part, as_text), preserve_index=False,
                                              schema=None if writer is None else writer.schema)
            writer = writer or parquet.ParquetWriter(file, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def write(table, path: Path | None, table_format: str | None = None):
    """Write one score ``table`` as :func:`write_parts` does; with ``path`` None, return its text in
    ``table_format`` ("csv" or "jsonl")."""
    if path is None:
        return text(table, table_format)
    write_parts([table], path)
    return None
