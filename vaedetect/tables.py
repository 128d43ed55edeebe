"""Tabular files for the command line: a CSV or Parquet table to fit on, and tables scored in chunks.

A table's numeric columns are the features; one column may be named as an identifier
(``--id-column``), kept out of the features and written beside each row's score. Scoring reads CSV
files in chunks of rows, so memory stays bounded whatever the file's length, and gives a row with a
missing or infinite value an error instead of a score, as an unreadable image gets one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import schema

TABLE_EXTENSIONS = (".csv", ".parquet")
# Rows of a CSV file read and scored at a time.
CHUNK_ROWS = 50_000
# Columns named in each row's ``top_features``: those that contribute most to its score.
TOP_FEATURES = 3


def is_table_file(path) -> bool:
    return Path(path).suffix.lower() in TABLE_EXTENSIONS


def _chunks(path, chunk_rows: int):
    import pandas as pd

    path = Path(path)
    try:
        if path.suffix.lower() == ".parquet":
            yield pd.read_parquet(path)
        else:
            yield from pd.read_csv(path, chunksize=chunk_rows)
    except (ValueError, OSError, ImportError, pd.errors.ParserError) as error:
        raise ValueError(f"cannot read the table {str(path)!r}: {error}") from None


def split_features(frame, path, id_column=None):
    """``frame``'s features (every numeric column but ``id_column``) and its identifiers, or
    ``ValueError`` naming the file and the offending columns."""
    if id_column is not None and id_column not in frame.columns:
        raise ValueError(f"{str(path)!r} has no column {id_column!r} (--id-column); its columns: {list(frame.columns)}.")
    if id_column in schema.columns(rows=True):
        raise ValueError(f"--id-column {id_column!r} is named like a column of the score table "
                         f"({', '.join(schema.columns(rows=True))}); rename it in {str(path)!r}.")
    features = frame.drop(columns=[id_column]) if id_column is not None else frame
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    # a file of a header alone has columns of no type yet: it holds no rows, which the callers say
    text = [str(name) for name in features.columns
            if len(features) and (not is_numeric_dtype(features[name]) or is_bool_dtype(features[name]))]
    if text:
        raise ValueError(f"{str(path)!r}: column(s) {text} are not numeric; name an identifier with --id-column "
                         "and convert or drop the others.")
    ids = frame[id_column] if id_column is not None else None
    return features, ids


def read_features(path, id_column=None):
    """The whole table at ``path`` as features for ``fit``: a DataFrame of its numeric columns."""
    import pandas as pd

    frame = pd.concat(list(_chunks(path, CHUNK_ROWS)), ignore_index=True)
    features, _ = split_features(frame, path, id_column)
    if not len(features):
        raise ValueError(f"{str(path)!r} holds no rows.")
    broken = ~np.isfinite(features.to_numpy(dtype=np.float64)).all(axis=1)
    if broken.any():
        raise ValueError(f"{str(path)!r}: {int(broken.sum())} rows hold a missing or infinite value (the first is row "
                         f"{int(np.argmax(broken))}, from 0); drop or impute them.")
    return features


def score_table_file(detector, path, *, id_column=None, chunk_rows: int = CHUNK_ROWS):
    """Score every row of the table at ``path`` with a detector fitted on tabular data.

    Returns
    -------
    table : pandas.DataFrame
        One row per row of the file, with the columns of :mod:`vaedetect.schema`: ``path``, ``row`` (its
        number, from 0), the identifier column when given, ``score``, ``p_value``, ``is_outlier``,
        ``top_features`` (the ``TOP_FEATURES`` columns that contribute most to its score, as ``name:nats``
        separated by ``;``, see ``VAEDetector.feature_contributions``) and ``error`` (why a row was not scored).
    """
    names = getattr(detector, "feature_names_in_", None)
    parts, start = [], 0
    for frame in _chunks(path, chunk_rows):
        features, ids = split_features(frame, path, id_column)
        if names is not None:
            missing = [name for name in names if name not in features.columns]
            if missing:
                raise ValueError(f"{str(path)!r} lacks the column(s) {missing} the model was fitted on.")
            features = features[list(names)]
        values = features.to_numpy(dtype=np.float64)
        good = np.isfinite(values).all(axis=1)
        scores, top = np.full(len(values), np.nan), np.full(len(values), "", dtype=object)
        if good.any():
            rows = features[good] if names is not None else values[good]
            scores[good] = detector.score_samples(rows)
            top[good] = top_features(detector.feature_contributions(rows))
        part = {"path": [str(path)] * len(values), "row": np.arange(start, start + len(values)), "score": scores,
                "top_features": top, "error": np.where(good, "", "a missing or infinite value")}
        if ids is not None:
            part[id_column] = ids.to_numpy()
        parts.append(schema.build(part, detector.calibration_, rows=True, id_column=id_column))
        start += len(values)
    if not parts:
        return schema.empty(rows=True, id_column=id_column)
    import pandas as pd

    return pd.concat(parts, ignore_index=True)


def top_features(contributions, n: int = TOP_FEATURES) -> list[str]:
    """Each row's ``n`` largest contributions (a DataFrame of ``feature_contributions``) as ``name:nats;...``."""
    values = contributions.to_numpy()
    order = np.argsort(-values, axis=1, kind="stable")[:, :n]
    names = np.asarray(contributions.columns, dtype=str)
    return [";".join(f"{names[j]}:{row[j]:.1f}" for j in columns) for row, columns in zip(values, order)]
