"""The offline set-difference benchmark: generated set pairs with known differences.

24 pairs in six families (four pairs each), every pair with ground-truth
conditions in the RadDiffBench format (lemmatized text ending with a space):

==============  ==========  ======================================================
family          difficulty  set 1 vs set 2
==============  ==========  ======================================================
presence        easy        a lesion vs none ("lung opacity " / "no finding ")
site            easy        site B (low contrast, blur) or site C (high contrast) vs site A
location        medium      lesions in the left vs the right lung, both directions
age             medium      65-85 vs 20-40 years, both directions
size            hard        large (r 0.11-0.14) vs small (r 0.05-0.07) lesions, both directions
sex             hard        female vs male, both directions
==============  ==========  ======================================================

A tiny Qwen2-VL is trained from scratch on yes/no attribute questions
("Does this image show an older patient?") about separately generated images,
answered from the generator's ground truth, so that the VLM ranker can work.
Every method ranks the same proposals (the concept vocabulary): the trained
VLM, random scores (chance), and the ground-truth attributes (the upper bound
of any ranker on these proposals). The offline embedding judge scores them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..atomic import FileSet
from ..datasets.synthetic import SyntheticConfig
from ..datasets.synthetic_attributes import ImageSpec, random_spec, write_images
from ..prompts import Request
from .inputs import ImageSet, SetPair
from .judges import EmbeddingJudge
from .pipeline import SetDiffRun, run_setdiff
from .proposers import ConceptVocabularyProposer
from .rankers import AttributeRanker, RandomRanker, VLMRanker, attribute_request
from .synthetic_reports import ReportNoise, write_report

#: lesions twice as conspicuous as the generator default, as in the demo: a tiny model trained
#: from scratch on a CPU budget does not learn the default contrast; 84 px is the tiny model's largest
#: input (9 visual tokens instead of 4 at 64 px), which location and size questions need
BENCHMARK_CONFIG = {"image_size": 84, "lesion_contrast": 0.35}
LARGE, SMALL = (0.11, 0.14), (0.05, 0.07)
OLD, YOUNG = (65, 85), (20, 40)


def _between(value: Any, low: float, high: float) -> float:
    """1 above ``high``, 0 below ``low``, 0.5 between (ambiguous: not used as a training label)."""
    if value is None:
        return 0.0
    return 1.0 if value >= high else 0.0 if value <= low else 0.5


#: ground truth of each vocabulary concept as a function of an image's attributes (1 yes, 0 no, 0.5 unclear)
CONCEPT_TRUTH: dict[str, Callable[[Mapping[str, Any]], float]] = {
    "a focal lung opacity": lambda m: float(bool(m.get("lesion"))),
    "a lesion in the right lung": lambda m: float(bool(m.get("lesion")) and m.get("lesion_side") == "right"),
    "a lesion in the left lung": lambda m: float(bool(m.get("lesion")) and m.get("lesion_side") == "left"),
    "a large lesion": lambda m: _between(m.get("lesion_radius"), 0.08, 0.10) if m.get("lesion") else 0.0,
    "a small lesion": lambda m: 1.0 - _between(m.get("lesion_radius"), 0.08, 0.10) if m.get("lesion") else 0.0,
    "clear lung fields": lambda m: float(not m.get("lesion")),
    "pleural effusion": lambda m: 0.0,
    "cardiomegaly": lambda m: 0.0,
    "pneumothorax": lambda m: 0.0,
    "pulmonary edema": lambda m: 0.0,
    "atelectasis": lambda m: 0.0,
    "a support device": lambda m: 0.0,
    "a low contrast blurry image": lambda m: float(m.get("site") == "site_b"),
    "a high contrast image": lambda m: float(m.get("site") == "site_c"),
    "a sharp image": lambda m: float(m.get("site") == "site_a"),
    "an older patient": lambda m: _between(m.get("age"), 45, 60),
    "a younger patient": lambda m: 1.0 - _between(m.get("age"), 45, 60),
    "a female patient": lambda m: float(m.get("sex") == "F"),
    "a male patient": lambda m: float(m.get("sex") == "M"),
}


@dataclass(frozen=True)
class PairDesign:
    """One benchmark pair: what each set fixes, its ground-truth conditions and difficulty."""

    family: str
    difficulty: str
    set1_condition: str
    set2_condition: str
    set1: dict[str, Any]
    set2: dict[str, Any]


def _designs() -> list[PairDesign]:
    lesion_bg = {"lesion_rate": 0.3}
    out: list[PairDesign] = []
    for _ in range(4):
        out.append(PairDesign("presence", "easy", "lung opacity ", "no finding ",
                              {"lesion": True}, {"lesion": False}))
    for site, text in (("site_b", "low contrast blurry image "), ("site_b", "low contrast blurry image "),
                       ("site_c", "high contrast image "), ("site_c", "high contrast image ")):
        out.append(PairDesign("site", "easy", text, "sharp image ", {"sites": [site], **lesion_bg},
                              {"sites": ["site_a"], **lesion_bg}))
    for first, second in (("left", "right"), ("right", "left"), ("left", "right"), ("right", "left")):
        out.append(PairDesign("location", "medium", f"{first} lung lesion ", f"{second} lung lesion ",
                              {"lesion": True, "lesion_side": first}, {"lesion": True, "lesion_side": second}))
    for first, second in ((OLD, YOUNG), (YOUNG, OLD), (OLD, YOUNG), (YOUNG, OLD)):
        name = {OLD: "old patient ", YOUNG: "young patient "}
        out.append(PairDesign("age", "medium", name[first], name[second], {"age_range": first, **lesion_bg},
                              {"age_range": second, **lesion_bg}))
    for first, second in ((LARGE, SMALL), (SMALL, LARGE), (LARGE, SMALL), (SMALL, LARGE)):
        name = {LARGE: "large lesion ", SMALL: "small lesion "}
        out.append(PairDesign("size", "hard", name[first], name[second], {"lesion": True, "radius_range": first},
                              {"lesion": True, "radius_range": second}))
    for first, second in (("F", "M"), ("M", "F"), ("F", "M"), ("M", "F")):
        name = {"F": "female patient ", "M": "male patient "}
        out.append(PairDesign("sex", "hard", name[first], name[second], {"sex": first, **lesion_bg},
                              {"sex": second, **lesion_bg}))
    return out


PAIR_DESIGNS: list[PairDesign] = _designs()


def _specs(rng: np.random.Generator, config: SyntheticConfig, fixed: Mapping[str, Any], n: int) -> list[ImageSpec]:
    options = dict(fixed)
    kwargs = {k: options.pop(k) for k in ("lesion_rate", "age_range", "sites", "radius_range") if k in options}
    return [random_spec(rng, config, **kwargs, **options) for _ in range(n)]


def build_benchmark_pairs(out_dir: str | Path, images_per_set: int = 20, seed: int = 0,
                          designs: Sequence[PairDesign] = PAIR_DESIGNS,
                          report_noise: ReportNoise | None = ReportNoise()) -> list[SetPair]:
    """Render every pair's images under ``out_dir/pairs`` and return the pairs (metadata = ground truth),
    with a report per image written from its ground truth with ``report_noise`` (``None``: no reports).
    Reports draw from their own random stream, so the images do not depend on them."""
    config = SyntheticConfig(seed=seed, **BENCHMARK_CONFIG)
    pairs = []
    for index, design in enumerate(designs):
        pair_id = f"synthetic-{index:02d}-{design.family}"
        sets = []
        for side, fixed in ((1, design.set1), (2, design.set2)):
            rng = np.random.default_rng([seed, index, side])
            specs = _specs(rng, config, fixed, images_per_set)
            records = write_images(Path(out_dir) / "pairs" / pair_id / f"set{side}", specs, config,
                                   seed=int(rng.integers(2**31)), prefix=f"set{side}")
            reports: list[str | None] = [None] * len(records)
            if report_noise is not None:
                report_rng = np.random.default_rng([seed, index, side, 7])
                reports = [write_report(r, report_rng, report_noise) for r in records]
            sets.append(ImageSet(design.set1_condition if side == 1 else design.set2_condition,
                                 [r["path"] for r in records], records, reports))
        pairs.append(SetPair(pair_id, sets[0], sets[1], set1_condition=design.set1_condition,
                             set2_condition=design.set2_condition, difficulty=design.difficulty,
                             extra={"family": design.family}))
    return pairs


def write_raddiff_files(pairs: Sequence[SetPair], out_dir: str | Path) -> tuple[Path, Path]:
    """The pairs as RadDiffBench-format JSONL (paths relative to ``out_dir``) and the difficulty CSV."""
    out = Path(out_dir)
    jsonl, csv = out / "benchmark.jsonl", out / "difficulty.csv"
    with FileSet(out, "raddiff") as files:  # the pairs and their difficulties appear together
        with open(files.path(jsonl.name), "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps({
                    "set1": pair.set1_condition, "set2": pair.set2_condition,
                    "set1_images": [str(Path(p).relative_to(out)) for p in pair.set1.images],
                    "set2_images": [str(Path(p).relative_to(out)) for p in pair.set2.images]}) + "\n" for pair in pairs)
        files.path(csv.name).write_text("set1,set2,difficulty\n" + "".join(
            f"\"{p.set1_condition}\",\"{p.set2_condition}\",{p.difficulty}\n" for p in pairs))
    return jsonl, csv


def write_report_csv(pairs: Sequence[SetPair], out_dir: str | Path) -> Path:
    """``reports.csv`` (``image`` relative to ``out_dir``, ``report``): the pairs' reports in the CSV
    form that ``setdiff run --reports`` reads."""
    import pandas as pd

    rows = [{"image": str(Path(p).relative_to(Path(out_dir))), "report": r}
            for pair in pairs for s in (pair.set1, pair.set2) for p, r in zip(s.images, s.reports) if r is not None]
    path = Path(out_dir) / "reports.csv"
    pd.DataFrame(rows, columns=["image", "report"]).to_csv(path, index=False)
    return path


# ----- the attribute-question training set ------------------------------------------------------------------------
def attribute_examples(records: Sequence[Mapping[str, Any]], concepts: Mapping[str, Callable], per_answer: int,
                       seed: int = 0, distractor_fraction: float = 0.25) -> list[tuple[Request, str, str]]:
    """Balanced yes/no questions: per concept up to ``per_answer`` "yes" and as many "no" examples
    (concepts never true here, the distractors, get ``distractor_fraction`` of that as "no" only)."""
    rng = np.random.default_rng(seed)
    images: dict[str, Image.Image] = {}
    examples: list[tuple[Request, str, str]] = []
    for concept, truth in concepts.items():
        values = np.array([truth(r) for r in records])
        yes, no = np.flatnonzero(values == 1.0), np.flatnonzero(values == 0.0)
        n = min(per_answer, len(yes), len(no)) if len(yes) else int(per_answer * distractor_fraction)
        chosen = [(int(i), "yes") for i in rng.permutation(yes)[:n]] + [(int(i), "no") for i in rng.permutation(no)[:n]]
        for i, answer in chosen:
            path = records[i]["path"]
            if path not in images:
                with Image.open(path) as handle:
                    images[path] = handle.convert("RGB")
            examples.append((attribute_request(images[path], concept), answer, f"{records[i]['image_id']}|{concept}"))
    order = rng.permutation(len(examples))
    return [examples[int(i)] for i in order]


def attribute_vlm_ranker(trained: Any) -> VLMRanker:
    """The VLM ranker over a model from :func:`train_attribute_vlm`; each generated image is decoded
    once (every hypothesis is asked of the same images)."""
    from ..backends.in_memory import loaded_backend

    backend = loaded_backend(trained.model, trained.processor, name="setdiff-attribute-vlm", batch_size=64,
                             vision_cache_mb=64)

    @lru_cache(maxsize=None)
    def load(path: str) -> Image.Image:
        with Image.open(path) as handle:
            return handle.convert("RGB")

    return VLMRanker(backend, image_loader=load)


def train_attribute_vlm(out_dir: str | Path, n_images: int = 800, per_answer: int = 240, max_steps: int = 2400,
                        batch_size: int = 16, lr: float = 5e-4, seed: int = 0, progress: bool = True) -> Any:
    """Train a tiny Qwen2-VL from scratch on attribute questions about ``n_images`` generated images
    (disjoint from the benchmark's: another seed); returns the :class:`~seeinpairs.training.TrainResult`."""
    from ..settings import ModelConfig
    from ..training import SFTSettings, train_on_examples

    out = Path(out_dir)
    config = SyntheticConfig(seed=seed + 1000, **BENCHMARK_CONFIG)
    rng = np.random.default_rng([seed, 1000])
    specs = [random_spec(rng, config, lesion_rate=0.5, radius_range=(0.05, 0.14)) for _ in range(n_images)]
    n_val = max(20, n_images // 10)
    train_records = write_images(out / "images" / "train", specs[n_val:], config, seed=seed + 1, prefix="train")
    val_records = write_images(out / "images" / "val", specs[:n_val], config, seed=seed + 2, prefix="val")
    train_examples = attribute_examples(train_records, CONCEPT_TRUTH, per_answer, seed)
    val_examples = attribute_examples(val_records, CONCEPT_TRUTH, max(4, per_answer // 10), seed + 1)
    settings = SFTSettings(name="setdiff-attributes", model=ModelConfig(tiny="qwen2_vl", tiny_seed=seed,
                                                                         batch_size=32, device="cpu"),
                           max_steps=max_steps, batch_size=batch_size, lr=lr, weight_decay=0.01,
                           eval_every=max(1, max_steps // 2), seed=seed, output_dir=out / "model")
    return train_on_examples(settings, train_examples, val_examples, progress=progress)


def measured_notes(run: SetDiffRun, pairs: Sequence[SetPair], method: str = "vlm") -> list[str]:
    """Sentences stating what was measured: acc@1/acc@5 of ``method`` against chance and the upper
    bound, and how often its top hypothesis was a finding no benchmark image has (a distractor)."""
    summary = run.summary()
    overall = summary[summary.difficulty == "all"].set_index("method")
    if method not in overall.index:
        return []

    def cell(name: str, metric: str) -> str:
        if name not in overall.index:
            return "NA"
        row = overall.loc[name]
        return f"{row[metric]:.2f} [{row[metric + '_lo']:.2f}, {row[metric + '_hi']:.2f}]"

    metadata = [m for p in pairs for m in (*p.set1.metadata, *p.set2.metadata)]
    never = {c for c, truth in CONCEPT_TRUTH.items() if metadata and all(truth(m) == 0.0 for m in metadata)}
    tops = [o.ranked[0].text for o in run.outcomes if o.method == method and o.ranked]
    distracted = sum(t in never for t in tops)
    return [
        (f"Measured over {len(tops)} pairs: {method} acc@1 {cell(method, 'acc@1')}, acc@5 {cell(method, 'acc@5')}; "
         f"exact chance acc@1 {cell('chance (exact)', 'acc@1')}, acc@5 {cell('chance (exact)', 'acc@5')}; "
         f"ranking by ground-truth attributes acc@1 {cell('ground-truth attributes', 'acc@1')}."),
        (f"In {distracted} of {len(tops)} pairs the {method} ranker's top hypothesis was a finding that no benchmark "
         "image has; such a hypothesis separates the sets only through other image properties (e.g. acquisition "
         "calibration shifting the model's yes/no odds)."),
    ]


# ----- the whole benchmark ----------------------------------------------------------------------------------------
@dataclass
class BenchmarkResult:
    """What :func:`run_setdiff_benchmark` measured (``run`` holds every ranked list and judgement)."""

    run: SetDiffRun
    pairs: list[SetPair]
    seconds: dict[str, float]
    training: dict[str, Any]
    output_dir: Path
    report: Path | None = None

    def summary(self):
        return self.run.summary()


def run_setdiff_benchmark(output_dir: str | Path, images_per_set: int = 20, train_images: int = 800,
                          train_steps: int = 2400, seed: int = 0, progress: bool = True,
                          designs: Sequence[PairDesign] = PAIR_DESIGNS):
    """Build the pairs, train the VLM ranker, rank the vocabulary three ways, judge, write results and report.

    Returns ``(BenchmarkResult, ReportSection)``; writes ``outcomes.jsonl``, ``summary.csv``,
    ``run.json``, ``benchmark.jsonl``/``difficulty.csv`` (the pairs in RadDiffBench format)
    and ``report.html`` under ``output_dir``.
    """
    from .report import setdiff_section, write_setdiff_report

    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    pairs = build_benchmark_pairs(out / "data", images_per_set, seed, designs)
    write_raddiff_files(pairs, out / "data")
    seconds["data"] = time.perf_counter() - started

    tick = time.perf_counter()
    trained = train_attribute_vlm(out / "ranker", n_images=train_images, max_steps=train_steps, seed=seed,
                                  progress=progress)
    seconds["training"] = time.perf_counter() - tick

    tick = time.perf_counter()
    proposer = ConceptVocabularyProposer()
    rankers = {"vlm": attribute_vlm_ranker(trained), "random": RandomRanker(seed),
               "ground-truth attributes": AttributeRanker(CONCEPT_TRUTH)}
    judge = EmbeddingJudge()
    run = run_setdiff(pairs, proposer, rankers, judge, seed=seed)
    run.settings.update({"images_per_set": images_per_set, "train_images": train_images, "train_steps": train_steps})
    seconds["pipeline"] = time.perf_counter() - tick
    seconds["total"] = time.perf_counter() - started
    run.write(out)
    best = trained.summary.get("best") or {}
    training = {"steps": trained.steps, "seconds": trained.seconds, "val_loss": best.get("val_loss"),
                "val_accuracy": best.get("val_accuracy"), "checkpoint": str(trained.checkpoint)}
    (out / "timing.json").write_text(json.dumps({"seconds": seconds, "training": training}, indent=2))
    result = BenchmarkResult(run, pairs, seconds, training, out)
    n_concepts = len(proposer.concepts)
    notes = [
        (f"All three methods rank the same {n_concepts} proposals per pair (the concept vocabulary, which holds a "
         "phrase for every generated difference and six findings the generator never draws). 'vlm': the tiny "
         "Qwen2-VL trained here from scratch, scored as log P(yes) - log P(no) to 'Does this image show ...?'; "
         "'random': seeded random scores (one draw of chance); 'chance (exact)': acc@k expected under a uniformly "
         "random ranking; 'ground-truth attributes': scores from the generator's record of each image, the best "
         "any ranker can do with these proposals and this judge."),
        (f"{len(pairs)} pairs of {images_per_set} + {images_per_set} generated images; the VLM was trained on "
         f"{train_images} other generated images (another seed), never on benchmark images."),
    ]
    notes += measured_notes(run, pairs)
    section = setdiff_section(run, pairs, training=training, seconds=seconds, primary="vlm", notes=notes)
    result.report = write_setdiff_report(out / "report.html", section)
    return result, section
