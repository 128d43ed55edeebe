"""Every published benchmark page, the command that measures it and the JSON it is generated from.

A page is made in two steps: a benchmark run writes its figures to a JSON file in ``benchmarks/results/``,
and the page is rendered from that file by a function of the benchmark's module. ``python -m benchmarks
reproduce NAME`` runs both; ``--render`` re-renders the page from the JSON alone (what the test suite does,
to catch a page that no longer matches its figures); ``--quick`` runs a shorter version where the page has
one, into a folder of the user's choosing, so that a quick run never overwrites published figures.

Pages under ``docs/experiments/`` are logs of settings screened and rejected; those whose JSON was kept are
listed here too, so they can be re-rendered and re-run the same way.
"""

from __future__ import annotations

import importlib
import json
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path("benchmarks/results")
NOTES = Path("benchmarks/notes")


@dataclass(frozen=True)
class Page:
    """One published page: ``docs/<page>``, generated from ``benchmarks/results/<results>``."""

    name: str
    page: str
    results: str
    module: str
    arguments: tuple[str, ...] = ()
    quick: tuple[str, ...] | None = None
    render: str = "markdown_page"
    needs: str = ""
    notes: bool = False

    @property
    def page_path(self) -> Path:
        return Path("docs") / self.page

    @property
    def results_path(self) -> Path:
        return RESULTS / self.results

    def command(self, out: Path | None = None, markdown: Path | None = None, quick: bool = False) -> list[str]:
        """The command line that measures this page, writing the JSON to ``out`` and the page to ``markdown``
        (by default the published ones)."""
        if quick and self.quick is None:
            raise ValueError(f"{self.name} has no quick version; run it in full or re-render it with --render")
        runner = ["python", "-m", self.module.removesuffix(".__main__")]
        if self.module == "benchmarks.__main__":  # the suite runner: python -m benchmarks run
            runner.append("run")
        return [*runner, *self.arguments, *(self.quick if quick else ()),
                "--out", str(out or self.results_path), "--markdown", str(markdown or self.page_path)]

    def render_page(self, results: dict | None = None) -> str:
        """The page's text from its results (by default the published JSON), with its notes if it has any."""
        if results is None:
            results = json.loads((ROOT / self.results_path).read_text())
        text = getattr(importlib.import_module(self.module), self.render)(results)
        if self.notes:
            text = text.rstrip("\n") + "\n\n" + (ROOT / NOTES / f"{self.name}.md").read_text()
        reproduce = f"python -m benchmarks reproduce {self.name}"
        return text.rstrip("\n") + f"\n\nReproduce: `{reproduce}` (`--render` re-renders it from `{self.results_path}`).\n"

    def describe(self) -> str:
        return shlex.join(self.command())


def _selection(name: str, *arguments: str, notes: bool = False,
               needs: str = "adbench_dev/ (the toy tasks need nothing)") -> Page:
    """An experiment log of ``benchmarks.tabular_selection``."""
    return Page(name, f"experiments/{name}.md", f"{name}.json", "benchmarks.tabular_selection", arguments,
                quick=("--seeds", "0"), needs=needs, notes=notes)


_DEV = ("--development", "adbench_dev", "--seeds", "0", "1", "2")
# The tables' default score against the ELBO, on sets that did not choose it.
_SCORES = ("--candidate", "elbo", "score_method=elbo", "--candidate", "min_evidence", "score_method=min_evidence")
_SMALL_COMBINED = ("--seeds", "0", "--n-train", "200", "--per-class", "20", "--n-synthetic", "20")

PAGES = (
    # the current results
    Page("summary", "benchmarks/summary.md", "benchmarks.json", "benchmarks.__main__", ("--quick",),
         needs="mnist/, cifar10/, adbench/ (each suite skips without its data)"),
    Page("full", "benchmarks/full.md", "benchmarks_full.json", "benchmarks.__main__", (),
         quick=("--suites", "tabular", "--seeds", "0"), needs="mnist/, cifar10/, adbench/; hours on a laptop CPU"),
    Page("tabular_adbench", "benchmarks/tabular_adbench.md", "tabular_adbench.json", "benchmarks.__main__",
         ("--suites", "tabular", "--seeds", "0", "1", "2"), quick=("--quick",), needs="adbench/, adbench_dev/"),
    Page("tabular_peers", "benchmarks/tabular_peers.md", "tabular_peers.json", "benchmarks.tabular_peers",
         quick=("--sets", "WBC", "glass"), needs="adbench/, adbench_dev/ and the bench extra (PyOD)", notes=True),
    Page("tabular_fit_speed", "benchmarks/tabular_fit_speed.md", "tabular_fit_speed.json", "benchmarks.tabular_fit_speed",
         quick=("--repeats", "1"), needs="nothing"),
    Page("tabular_scale", "benchmarks/tabular_scale.md", "tabular_scale.json", "benchmarks.tabular_scale",
         quick=("--shares", "0.01"),
         needs="adbench_large/", notes=True),
    Page("table_scoring", "benchmarks/table_scoring.md", "table_scoring.json", "benchmarks.table_scoring",
         quick=("--sizes", "100000"), needs="nothing"),
    Page("mnist_one_class", "benchmarks/mnist_one_class.md", "mnist_one_class.json", "benchmarks.mnist_one_class",
         ("--focus", "bits_typicality"), quick=("--digits", "0", "1"), needs="mnist/"),
    Page("scores_cifar_dog", "benchmarks/scores_cifar_dog.md", "cifar_dog_ood.json", "benchmarks.cifar_dog_ood",
         quick=("--epochs", "2", "--per-class", "50", "--n-synthetic", "50"), needs="cifar10/, mnist/"),
    Page("calibration", "benchmarks/calibration.md", "calibration.json", "benchmarks.calibration", quick=("--digits", "0", "1"),
         needs="mnist/"),
    Page("features_one_class", "benchmarks/features_one_class.md", "features_one_class.json", "benchmarks.features",
         ("--all-classes", "--seeds", "0", "1", "2"), render="markdown_one_class_page",
         quick=("--seeds", "0", "--n-train", "200", "--per-class", "20"), needs="cifar10/ and the pretrained extra"),
    Page("combined_dog", "benchmarks/combined_dog.md", "combined_dog.json", "benchmarks.combined",
         ("--seeds", "0", "1", "2"), quick=_SMALL_COMBINED, needs="cifar10/, mnist/ and the pretrained extra"),
    Page("backbone_fit", "benchmarks/backbone_fit.md", "backbone_fit.json", "benchmarks.backbone_fit",
         ("--modes", "features", "combined_32px"), needs="cifar10/ and the pretrained extra"),
    Page("backbone_fit_64px", "benchmarks/backbone_fit_64px.md", "backbone_fit_64px.json", "benchmarks.backbone_fit",
         ("--modes", "combined"), needs="cifar10/ and the pretrained extra"),
    Page("backbone_speed", "benchmarks/backbone_speed.md", "backbone_speed.json", "benchmarks.backbone_speed",
         quick=("--batch-sizes", "4", "--n-images", "8", "--rounds", "1"), needs="the pretrained extra"),
    Page("export_speed", "benchmarks/export_speed.md", "export_speed.json", "benchmarks.export_speed",
         quick=("--n-images", "50", "--n-rows", "500", "--n-photos", "8"),
         needs="mnist/, adbench/, cifar10/, the pretrained and the onnx extras", notes=True),
    Page("feature_maps", "benchmarks/feature_maps.md", "feature_maps.json", "benchmarks.feature_maps",
         quick=("--n-train", "200", "--per-class", "20"), needs="cifar10/ and the pretrained extra", notes=True),
    Page("torch_compile", "benchmarks/torch_compile.md", "torch_compile.json", "benchmarks.torch_compile",
         quick=("--image-sizes", "32"), render="markdown", needs="nothing"),
    # experiment logs whose JSON was kept
    Page("calibration_halves", "experiments/calibration_halves.md", "calibration_halves.json", "benchmarks.calibration",
         ("--protocol", "halves", "--splits", "0.1:0.1"), quick=("--digits", "0", "1"), needs="mnist/"),
    Page("combined_horse", "experiments/combined_horse.md", "combined_horse.json", "benchmarks.combined",
         ("--normal", "horse", "--seeds", "0"), quick=_SMALL_COMBINED, needs="cifar10/, mnist/ and the pretrained extra"),
    Page("combined_horse_weights", "experiments/combined_horse_weights.md", "combined_horse_weights.json",
         "benchmarks.combined", ("--normal", "horse", "--seeds", "0"), quick=_SMALL_COMBINED,
         needs="cifar10/, mnist/ and the pretrained extra"),
    Page("features_flips", "experiments/features_flips.md", "features_flips.json", "benchmarks.features_flips",
         needs="cifar10/ and the pretrained extra"),
    Page("backbone_adaptation", "experiments/backbone_adaptation.md", "adaptation.json", "benchmarks.adaptation",
         quick=("--classes", "dog", "--settings", "7:1e-4", "--epochs", "1", "--n-train", "64", "--n-eval", "8"),
         needs="cifar10/ and the pretrained extra"),
    Page("features_one_class_lite2", "experiments/features_one_class_lite2.md", "features_one_class_lite2.json",
         "benchmarks.features", ("--all-classes", "--backbone", "efficientnet_lite2", "--seeds", "0", "1", "2"),
         render="markdown_one_class_page", quick=("--seeds", "0", "--n-train", "200", "--per-class", "20"),
         needs="cifar10/ and the pretrained extra"),
    Page("tabular_evidence", "experiments/tabular_evidence.md", "tabular_evidence.json", "benchmarks.tabular_evidence",
         ("--seeds", "0", "1", "2"), quick=("--seeds", "0"), needs="adbench/, adbench_dev/", notes=True),
    _selection("tabular_trim_fraction", *_DEV, "--candidate", "trim10", "--candidate", "trim5", "trim_fraction=0.05",
               "--candidate", "untrimmed", "trim_fraction=0", notes=True),
    _selection("tabular_dev_ensemble", *_DEV, "--candidate", "floor_lr1e-3", "learning_rate=0.001", "--candidate",
               "floor_lr1e-3_ens3", "learning_rate=0.001", "ensemble=3", "--candidate", "floor_ens3", "ensemble=3"),
    _selection("tabular_dev_raw_ensemble", "--development", "toy", "adbench_dev", "--seeds", "0", "1", "2",
               "--candidate", "lr1e-3_ens3", "learning_rate=0.001", "ensemble=3",
               "--candidate", "lr1e-3_ens3_raw", "learning_rate=0.001", "ensemble_raw=3"),
    _selection("tabular_dev_settings", *_DEV, "--candidate", "default", "--candidate", "latent8", "latent_dim=8",
               "--candidate", "lr1e-3", "learning_rate=0.001", "--candidate", "power", "preprocess=power",
               "--candidate", "quantile", "preprocess=quantile", "--candidate", "gaussian", "likelihood=gaussian",
               "--candidate", "ensemble3", "ensemble=3"),
    _selection("tabular_dev_steps", *_DEV, "--candidate", "default", "--candidate", "steps1000", "min_steps=1000",
               "--candidate", "steps2500", "min_steps=2500"),
    _selection("tabular_floor", "--development", "adbench_dev", "toy", "--seeds", "0", "1", "2",
               "--candidate", "floor", "--candidate", "floor_clip0", "clip=0", "--candidate", "floor_clip1", "clip=1"),
    _selection("tabular_min_evidence_toy", "--development", "toy", "--seeds", "0", "1", "2", *_SCORES, notes=True),
    _selection("tabular_min_evidence_large", "--development", "adbench_large", "--seeds", "0", *_SCORES, notes=True,
               needs="adbench_large/"),
)

# Experiment logs kept as records only: their JSON is missing, was made by code that has since changed, or the
# page carries analysis its renderer does not produce. Each names the command that made it on the page.
RECORDS = {
    "experiments/auto_epochs.md": "python -m benchmarks compare (written on the page)",
    "experiments/default_epochs.md": "python -m benchmarks compare (written on the page)",
    "experiments/cifar_folder_scoring.md": "python -m benchmarks.cifar_folder_scoring (before bits_typicality)",
    "experiments/features_dog.md": "python -m benchmarks.features --normal dog",
    "experiments/features_one_class_plain.md": "python -m benchmarks.features --all-classes (before power normalisation)",
    "experiments/features_tried.md": "throw-away scripts on cached embeddings, and the commands it names",
    "experiments/tabular_adbench_reconstruction_probability.md": "python -m benchmarks run --suites tabular",
    "experiments/tabular_adbench_single.md": "python -m benchmarks run --suites tabular",
    "experiments/tabular_adbench_untrimmed.md": "python -m benchmarks run --suites tabular",
    "experiments/tabular_batch_size.md":
        "python -m benchmarks.tabular_selection (written on the page; `auto` was then 25 epochs at 1e-3)",
    "experiments/tabular_batch_size_first.md":
        "python -m benchmarks.tabular_selection (written on the page; before AdamW was fused)",
    "experiments/tabular_rate_epochs.md": "python -m benchmarks.tabular_selection (written on the page)",
    "experiments/tabular_step_budget.md": "python -m benchmarks.tabular_selection (written on the page)",
    "experiments/tabular_draws.md": "python -m benchmarks compare (written on the page)",
    "experiments/tabular_latent.md": "python -m benchmarks.tabular_selection (written on the page)",
    "experiments/tabular_likelihood.md": "python -m benchmarks.tabular_selection (written on the page)",
    "experiments/tabular_members.md": "python -m benchmarks.tabular_selection (written on the page)",
    "experiments/tabular_members_draws.md": "python -m benchmarks.tabular_selection (written on the page)",
    "experiments/tabular_members_epochs.md": "python -m benchmarks.tabular_selection (written on the page)",
    "experiments/tabular_members_settings.md": "python -m benchmarks.tabular_selection (written on the page)",
    "experiments/tabular_members_size.md": "python -m benchmarks.tabular_selection (written on the page)",
    "experiments/tabular_members_training.md": "python -m benchmarks.tabular_selection (written on the page)",
    "experiments/tabular_reconstruction_probability.md": "python -m benchmarks.tabular_selection (written on the page)",
    "experiments/tabular_residual.md": "python -m benchmarks.tabular_selection (written on the page)",
    "experiments/tabular_scale_single.md": "python -m benchmarks.tabular_scale (one network, before members)",
    "experiments/tabular_scores.md": "python -m benchmarks.tabular_selection (written on the page)",
    "experiments/tabular_screening.md": "python -m benchmarks.tabular_selection (written on the page)",
    "experiments/tabular_trimmed.md": "python -m benchmarks run --suites tabular --seeds 0 1 2 (written on the page)",
    "experiments/tabular_width.md": "python -m benchmarks.tabular_selection (written on the page)",
    "experiments/tabular_wrappers.md": "python -m benchmarks.tabular_selection (written on the page)",
    "experiments/usage_notes.md": "the records of the first user guide, with the commands they name",
}


def page(name: str) -> Page:
    """The page called ``name`` (its file name without ``.md`` also works); a ValueError listing them otherwise."""
    for entry in PAGES:
        if name in (entry.name, entry.page, str(entry.page_path), Path(entry.page).stem):
            return entry
    known = ", ".join(entry.name for entry in PAGES)
    raise ValueError(f"no published page {name!r}; the pages are: {known}")
