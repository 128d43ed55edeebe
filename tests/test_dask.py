"""Scoring folders on a Dask cluster, and in shards: the same rows as one `vaedetect score`."""

from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

import vaedetect
from tests.conftest import needs_lite0, write_squares
from tests.data.make_format2_models import probe_images
from vaedetect.cli import main

DATA = Path(__file__).parent / "data"

pytest.importorskip("dask.distributed", reason="the Dask tests need the extra vaedetect[dask]")

FIT_ARGS = ["--image-size", "8", "--channels", "1", "--latent-dim", "2", "--base-channels", "4", "--n-stages", "2",
            "--epochs", "2", "--seed", "0", "--quiet"]


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A model, a folder of 23 files in two subfolders (one corrupt), and its single-process table."""
    root = tmp_path_factory.mktemp("dask")
    write_squares(root / "train", 30, seed=0)
    write_squares(root / "new" / "normal", 12, seed=1)
    write_squares(root / "new" / "odd", 10, seed=2, bright=False)
    (root / "new" / "odd" / "corrupt.jpg").write_text("no jpeg here")
    runner = CliRunner()
    result = runner.invoke(main, ["fit", str(root / "train"), "-o", str(root / "model.vae"), *FIT_ARGS])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["score", str(root / "model.vae"), str(root / "new"), "-o", str(root / "one.csv")])
    assert result.exit_code == 0, result.output
    return root, _read(root / "one.csv")


def _read(path):
    """The table the CSV holds, text as text: compared with :func:`_same`."""
    return pd.read_csv(path, keep_default_na=False, na_values={"score": [""], "p_value": [""]},
                       dtype={"path": str, "error": str})


def _same(table, expected):
    """Row for row the same files, errors and verdicts; scores and p-values equal up to the float32 rounding of
    other batch sizes (scores are computed in float64 from a float32 network)."""
    pd.testing.assert_frame_equal(table, expected, check_exact=False, rtol=1e-6)


def test_cli_on_a_local_dask_cluster_writes_the_same_rows(scored):
    root, expected = scored
    result = CliRunner().invoke(main, ["score", str(root / "model.vae"), str(root / "new"), "-o",
                                       str(root / "dask.csv"), "--dask-workers", "2"])
    assert result.exit_code == 0, result.output
    _same(_read(root / "dask.csv"), expected)
    assert len(expected) == 23 and (expected["error"] != "").sum() == 1


def test_python_api_partitions_come_back_in_path_order(scored):
    from dask.distributed import Client, LocalCluster

    from vaedetect.dask import score_paths

    root, expected = scored
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster, Client(cluster):
        table = score_paths(root / "model.vae", root / "new", files_per_partition=5)
        assert table.npartitions == 5  # 23 files, 5 per partition
        computed = table.compute().reset_index(drop=True)
    computed.to_csv(root / "api.csv", index=False)
    _same(_read(root / "api.csv"), expected)


def test_shards_together_are_the_whole_table(scored):
    root, expected = scored
    parts = []
    for index in range(3):
        out = root / f"shard{index}.csv"
        result = CliRunner().invoke(main, ["score", str(root / "model.vae"), str(root / "new"), "-o", str(out),
                                           "--shard", f"{index}/3"])
        assert result.exit_code == 0, result.output
        parts.append(_read(out))
    assert [len(p) for p in parts] == [8, 8, 7]
    whole = pd.concat(parts).sort_values("path", ignore_index=True)
    _same(whole, expected)


@pytest.mark.parametrize("value", ["3/3", "1", "a/b", "-1/2"])
def test_a_malformed_shard_is_refused(scored, value):
    root, _ = scored
    result = CliRunner().invoke(main, ["score", str(root / "model.vae"), str(root / "new"), "--shard", value])
    assert result.exit_code == 2 and "must be I/N with 0 <= I < N" in result.output


def test_dask_scoring_refuses_two_thresholds(scored):
    from vaedetect.dask import score_paths

    root, _ = scored
    with pytest.raises(ValueError, match="at most one of threshold, fpr and contamination"):
        score_paths(root / "model.vae", root / "new", fpr=0.1, threshold=-3.0)


@pytest.mark.parametrize("maps", [False, True])
def test_the_dask_meta_is_the_table_a_worker_returns(scored, tmp_path, maps):
    """Dask builds the table from its ``meta`` before any worker answers: a column or dtype there that differs
    from the real table would be a wrong promise (both come from vaedetect.schema)."""
    from vaedetect.dask import score_paths

    root, _ = scored
    table = score_paths(root / "model.vae", [root / "new"], files_per_partition=8,
                        maps_dir=tmp_path / "maps" if maps else None)
    computed = table.compute()
    assert list(table._meta.columns) == list(computed.columns)
    assert table._meta.dtypes.equals(computed.dtypes) and len(computed) == 23


@needs_lite0
def test_a_combined_model_scores_on_dask_with_its_evidence_columns(tmp_path):
    from PIL import Image

    from vaedetect.dask import score_paths

    for i, image in enumerate(probe_images()):
        Image.fromarray(image).save(tmp_path / f"{i:02d}.png")
    model = DATA / "combined_format2.vae"
    table = score_paths(model, [tmp_path], files_per_partition=11)
    computed = table.compute()
    assert list(table._meta.columns) == list(computed.columns) and "evidence" in computed
    assert table._meta.dtypes.equals(computed.dtypes)
    expected = vaedetect.load(model).score_paths(tmp_path)
    # Dask holds text as its string dtype (its meta says so too); the values are the in-process table's, up to the
    # float32 rounding of other batch sizes (partitions of 11 files)
    pd.testing.assert_frame_equal(computed.reset_index(drop=True), expected, check_dtype=False, rtol=1e-4, atol=1e-3)
