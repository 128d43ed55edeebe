"""Tabular files for the command line: a CSV or Parquet table to fit on, and tables scored chunk by chunk.

A table's numeric columns are the features; one column may be named as an identifier (``--id-column``), kept
out of the features and written beside each row's score. Scoring reads CSV files in chunks of rows and Parquet
files batch by batch, and yields each chunk's score table, so that memory stays bounded whatever the file's
length. A cell that is not a number, missing or infinite fails its row, whose error names the column, as an
unreadable image gets one; every other row is scored. Lines longer than ``MAX_LINE_BYTES`` and tables wider
than ``MAX_COLUMNS`` are refused before any parsing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import schema

TABLE_EXTENSIONS = (".csv", ".parquet")
# Rows of a table read and scored at a time.
CHUNK_ROWS = 50_000
# Columns named in each row's ``top_features``: those that contribute most to its score.
TOP_FEATURES = 3
# A CSV line (and a table's width) that parsing could not hold in bounded memory: refused from a scan of the bytes.
MAX_LINE_BYTES = 2**20
MAX_COLUMNS = 10_000


def is_table_file(path) -> bool:
    return Path(path).suffix.lower() in TABLE_EXTENSIONS


def _check_csv_lines(path: Path) -> None:
    """Refuse a CSV file with a line longer than ``MAX_LINE_BYTES`` (parsing one costs many times its size
    in memory), scanning its bytes a megabyte at a time."""
    current, number = 0, 1  # the length of the line read so far, and its number
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(2**20), b""):
            pieces = block.split(b"\n")
            for piece in pieces[:-1]:
                current += len(piece)
                if current > MAX_LINE_BYTES:
                    break
                current, number = 0, number + 1
            else:
                current += len(pieces[-1])
            if current > MAX_LINE_BYTES:
                raise ValueError(f"{str(path)!r}: line {number} is longer than {MAX_LINE_BYTES} bytes, more than a "
                                 "table row of vaedetect holds; is it a table?")


def _chunks(path, chunk_rows: int):
    """The table at ``path``, ``chunk_rows`` rows at a time (DataFrames); ValueError naming the file for anything
    that cannot be read."""
    import pandas as pd

    path = Path(path)
    try:
        if path.suffix.lower() == ".parquet":
            yield from _parquet_chunks(path, chunk_rows)
            return
        _check_csv_lines(path)
        for frame in pd.read_csv(path, chunksize=chunk_rows):
            _check_width(frame.columns, path)
            yield frame
    except (ValueError, OSError, ImportError, MemoryError, pd.errors.ParserError) as error:
        raise ValueError(f"cannot read the table {str(path)!r}: {' '.join(str(error).split())}") from None


def _parquet_chunks(path: Path, chunk_rows: int):
    import pyarrow
    import pyarrow.parquet as parquet

    try:
        file = parquet.ParquetFile(path, pre_buffer=False)  # pre-buffering keeps every row group read in memory
        names = file.schema_arrow.names
        _check_width(names, path)
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"{str(path)!r} has more than one column named {duplicates[0]!r}.")
        batches = file.iter_batches(batch_size=chunk_rows)
        empty = True
        for batch in batches:
            empty = False
            yield batch.to_pandas()
        if empty:  # no batch at all: the columns, without rows
            yield file.schema_arrow.empty_table().to_pandas()
    except pyarrow.ArrowException as error:  # a forged footer (10^12 rows), a truncated file...
        raise ValueError(str(error)) from None


def _check_width(columns, path) -> None:
    if len(columns) > MAX_COLUMNS:
        raise ValueError(f"{str(path)!r} has {len(columns)} columns, more than the {MAX_COLUMNS} a table of vaedetect "
                         "may have.")


def split_features(frame, path, id_column=None):
    """``frame``'s features (every column but ``id_column``) and its identifiers, or ``ValueError`` naming the
    file and the offending column."""
    if id_column is not None and id_column not in frame.columns:
        raise ValueError(f"{str(path)!r} has no column {id_column!r} (--id-column); its columns: {list(frame.columns)}.")
    if id_column in schema.columns(rows=True):
        raise ValueError(f"--id-column {id_column!r} is named like a column of the score table "
                         f"({', '.join(schema.columns(rows=True))}); rename it in {str(path)!r}.")
    features = frame.drop(columns=[id_column]) if id_column is not None else frame
    ids = frame[id_column] if id_column is not None else None
    return features, ids


def feature_values(features) -> tuple[np.ndarray, np.ndarray]:
    """The cells of ``features`` as float64 ``(n, d)``, and each row's error: empty, or the first column whose cell
    is not a number (text), missing or infinite, named."""
    import pandas as pd

    values = np.empty(features.shape, dtype=np.float64)
    errors = np.full(len(features), "", dtype=object)
    for j, name in enumerate(features.columns):
        cells = features.iloc[:, j]
        numbers = pd.to_numeric(cells, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        values[:, j] = numbers
        for row in np.flatnonzero(~np.isfinite(numbers) & (errors == "")):
            text = cells.iloc[row]
            errors[row] = (f"column {str(name)!r} is missing or infinite" if pd.isna(text) or not isinstance(text, str)
                           else f"column {str(name)!r} is not a number: {text[:40]!r}")
    return values, errors


def read_features(path, id_column=None):
    """The whole table at ``path`` as features for ``fit``: a DataFrame of numbers; ValueError naming the first
    cell that is not a finite number (fitting needs every row)."""
    import pandas as pd

    frame = pd.concat(list(_chunks(path, CHUNK_ROWS)), ignore_index=True)
    features, _ = split_features(frame, path, id_column)
    if not len(features):
        raise ValueError(f"{str(path)!r} holds no rows.")
    values, errors = feature_values(features)
    text = [str(name) for j, name in enumerate(features.columns) if np.isnan(values[:, j]).all()
            and features.iloc[:, j].notna().any()]
    if text:
        raise ValueError(f"{str(path)!r}: column(s) {text} are not numeric; name an identifier with --id-column "
                         "and convert or drop the others.")
    broken = np.flatnonzero(errors != "")
    if len(broken):
        advice = "" if id_column is not None else "; name an identifier column with --id-column"
        raise ValueError(f"{str(path)!r}: {len(broken)} rows cannot be fitted on, the first row {broken[0]} (from 0): "
                         f"{errors[broken[0]]}. Drop, convert or impute them{advice}.")
    return pd.DataFrame(values, columns=features.columns, index=features.index)


def iter_table_scores(detector, path, *, id_column=None, chunk_rows: int = CHUNK_ROWS):
    """Score the rows of the table at ``path`` with a detector fitted on tabular data, chunk by chunk.

    Yields
    ------
    table : pandas.DataFrame
        The score table (:mod:`vaedetect.schema`) of up to ``chunk_rows`` rows: ``path``, ``row`` (its number in
        the file, from 0), the identifier column when given, ``score``, ``p_value``, ``is_outlier``,
        ``top_features`` (the ``TOP_FEATURES`` columns that contribute most to its score, as ``name:nats``
        separated by ``;``, see ``VAEDetector.feature_contributions``) and ``error`` (why a row was not scored:
        the column whose cell is not a finite number). Columns the model was not fitted on are left out.
    """
    import pandas as pd

    names = getattr(detector, "feature_names_in_", None)
    start = 0
    for frame in _chunks(path, chunk_rows):
        features, ids = split_features(frame, path, id_column)
        if names is not None:
            missing = [name for name in names if name not in features.columns]
            if missing:
                raise ValueError(f"{str(path)!r} lacks the column(s) {missing} the model was fitted on.")
            features = features[list(names)]
        values, errors = feature_values(features)
        good = errors == ""
        scores, top = np.full(len(values), np.nan), np.full(len(values), "", dtype=object)
        if good.any():
            rows = pd.DataFrame(values[good], columns=names) if names is not None else values[good]
            contributions, scores[good] = detector.feature_contributions(rows, return_scores=True)  # one pass
            top[good] = top_features(contributions)
        part = {"path": [str(path)] * len(values), "row": np.arange(start, start + len(values)), "score": scores,
                "top_features": top, "error": errors}
        if ids is not None:
            part[id_column] = ids.to_numpy()
        yield schema.build(part, detector.calibration_, rows=True, id_column=id_column)
        start += len(values)


def score_table_file(detector, path, *, id_column=None, chunk_rows: int = CHUNK_ROWS):
    """The whole score table of :func:`iter_table_scores` (an empty one for a file of no rows)."""
    import pandas as pd

    parts = list(iter_table_scores(detector, path, id_column=id_column, chunk_rows=chunk_rows))
    return pd.concat(parts, ignore_index=True) if parts else schema.empty(rows=True, id_column=id_column)


def top_features(contributions, n: int = TOP_FEATURES) -> list[str]:
    """Each row's ``n`` largest contributions (a DataFrame of ``feature_contributions``) as ``name:nats;...``."""
    values = contributions.to_numpy()
    order = np.argsort(-values, axis=1, kind="stable")[:, :n]
    names = np.asarray(contributions.columns, dtype=str)
    return [";".join(f"{names[j]}:{row[j]:.1f}" for j in columns) for row, columns in zip(values, order)]
