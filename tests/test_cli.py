import subprocess
import sys

import pandas as pd
from click.testing import CliRunner

from vaedetect.cli import main


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from vaedetect.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported by --help'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "demo" in result.stdout


def test_demo_trains_scores_and_writes_model_and_csv(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path), "--epochs", "3"])
    assert result.exit_code == 0, result.output
    assert "ROC AUC" in result.output
    scores = pd.read_csv(tmp_path / "scores.csv")
    assert len(scores) == 898  # the odd-indexed half of the 1797 digits
    assert set(scores.columns) == {"index", "digit", "score", "is_outlier"}
    assert (tmp_path / "digits.vae").stat().st_size > 0
