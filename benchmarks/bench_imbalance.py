"""Does a tiny paired model learn an imbalanced task? Class balancing on, off and by sampler.

Builds an imbalanced two-class training set shaped like BreastMNIST (28x28,
about 73% healthy, 546 training cases) from a MedMNIST file beside the project
(``shared/data``): ``--data retina`` (RetinaMNIST as "no retinopathy" (grade 0)
vs "retinopathy" (grades 1-4), a hard task like BreastMNIST; validation: the
official val split as it is) or ``--data pneumonia`` (the class-balanced
PneumoniaMNIST subset, an easy task; validation subsampled to the same share). It trains a tiny
Qwen2-VL from scratch with one reference per example under each
``class_balance`` mode, and evaluates each model on the held-out validation
split (never the test split) with bootstrap intervals and the failed-training
check. One line per mode: balanced accuracy and AUROC with 95% CIs, the
``degenerate`` verdict of the predictions and the ``flat_loss`` verdict of the
training loss.

    python benchmarks/bench_imbalance.py [--steps 300] [--modes none,loss,sampler] [--lr 1e-3]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SOURCES = {"pneumonia": SHARED / "pneumoniamnist" / "pneumoniamnist_balanced.npz",
           "retina": SHARED / "retinamnist" / "retinamnist.npz"}
TASKS = {
    "pneumonia": {"name": "pneumonia", "question": "Does the query chest x-ray show pneumonia?",
                  "classes": ["normal", "pneumonia"], "healthy_class": "normal", "modality": "pediatric chest x-ray"},
    "retina": {"name": "retinopathy", "question": "Does the query fundus photograph show diabetic retinopathy?",
               "classes": ["normal", "retinopathy"], "healthy_class": "normal", "modality": "fundus photograph"},
}


def imbalanced_npz(source: Path, out: Path, n_train: int, n_val: int | None, healthy_share: float,
                   seed: int) -> dict:
    """A two-class npz (label 0 = normal: native label 0; 1 = any other) whose train split (and val
    split, unless ``n_val`` is None: then kept whole) holds ``healthy_share`` normal cases."""
    data = np.load(source)
    rng = np.random.default_rng(seed)
    arrays, counts = {}, {}
    for split, n in (("train", n_train), ("val", n_val), ("test", 20)):
        labels = (data[f"{split}_labels"].ravel() > 0).astype(np.uint8)
        if n is None:
            arrays[f"{split}_images"], arrays[f"{split}_labels"] = data[f"{split}_images"], labels[:, None]
            counts[split] = {"normal": int((labels == 0).sum()), "abnormal": int(labels.sum())}
            continue
        n_normal = round(n * healthy_share)
        chosen = np.r_[rng.choice(np.flatnonzero(labels == 0), n_normal, replace=False),
                       rng.choice(np.flatnonzero(labels == 1), n - n_normal, replace=False)]
        chosen = rng.permutation(chosen)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = data[f"{split}_images"][chosen], labels[chosen, None]
        counts[split] = {"normal": int(n_normal), "abnormal": int(n - n_normal)}
    np.savez(out, **arrays)
    return counts


def write_manifest(npz: Path, folder: Path, classes: list[str]) -> Path:
    """The two-class npz as PNG files and a manifest whose labels are ``classes`` (0 normal, 1 abnormal)."""
    from dataclasses import replace

    from seeinpairs.cases import CaseTable
    from seeinpairs.datasets.medmnist import load_medmnist

    table, native = load_medmnist(npz, flag="pneumoniamnist", image_dir=folder / "png")
    names = dict(zip(native.classes, classes))
    return CaseTable([replace(c, label=names[c.label]) for c in table]).save(folder / "manifest.csv")


def run_mode(mode: str, folder: Path, manifest: Path, args: argparse.Namespace) -> dict:
    from seeinpairs.evaluation.config import ExperimentConfig
    from seeinpairs.evaluation.runner import run_experiment
    from seeinpairs.training import TrainConfig, train

    task = TASKS[args.data]
    data = {"manifest": str(manifest)}
    model = {"tiny": "qwen2_vl", "device": "cpu", "batch_size": 16}
    config = TrainConfig.from_dict({
        "name": f"paired-{mode}", "task": task, "data": data, "model": model, "k": args.k, "selector": "random",
        "max_steps": args.steps, "batch_size": 16, "lr": args.lr, "warmup_ratio": args.warmup,
        "weight_decay": 0.01, "eval_every": args.steps, "val_split": None, "class_balance": mode,
        "seed": args.seed, "output_dir": str(folder / f"paired-{mode}")}, source="bench_imbalance")
    started = time.perf_counter()
    result = train(config, progress=False)
    seconds = time.perf_counter() - started
    experiment = ExperimentConfig.from_dict({
        "name": f"val-{mode}", "task": task, "data": data,
        "models": [{"name": str(result.checkpoint), "label": mode, "device": "cpu", "batch_size": 16,
                    "conditions": [{"selector": "random", "k": args.k}]}],
        "eval": {"split": "val", "n_boot": 1000, "metrics": ["balanced_accuracy", "auroc", "accuracy"]},
        "output_dir": str(folder / f"eval-{mode}")}, source="bench_imbalance")
    row = run_experiment(experiment, progress=False).summary.iloc[0]
    flat = result.summary["training_flags"]["flat_loss"]
    return {"mode": mode, "applied": result.summary["class_balance"]["applied"], "train_seconds": round(seconds, 1),
            **{m: [round(float(row[m]), 3), round(float(row[f"{m}_lo"]), 3), round(float(row[f"{m}_hi"]), 3)]
               for m in ("balanced_accuracy", "auroc", "accuracy")},
            "degenerate": row["degenerate"] or "", "flat_loss": flat.get("flagged"),
            "late_loss": round(flat.get("late", float("nan")), 3), "prior_loss": round(flat["prior_loss"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=sorted(SOURCES), default="retina")
    parser.add_argument("--npz", type=Path, default=None, help="the source npz (default: the one in shared/data)")
    parser.add_argument("--modes", default="none,loss,sampler")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=float, default=0.05)
    parser.add_argument("--k", type=int, default=1)
    parser.add_argument("--n-train", type=int, default=546, help="BreastMNIST's training size")
    parser.add_argument("--n-val", type=int, default=None,
                        help="subsample val to the training share (default: retina keeps val whole, pneumonia 180)")
    parser.add_argument("--healthy-share", type=float, default=0.73)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    args.npz = args.npz or SOURCES[args.data]
    if args.n_val is None and args.data == "pneumonia":
        args.n_val = 180
    if not args.npz.is_file():
        raise SystemExit(f"{args.npz}: not found (pass --npz)")
    from seeinpairs.runtime import configure_threads

    configure_threads()
    with tempfile.TemporaryDirectory(prefix="seeinpairs-bench-imbalance-") as tmp:
        folder = args.out or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        npz = folder / "pneumoniamnist.npz"  # two-class, in the layout of the pneumoniamnist flag
        counts = imbalanced_npz(args.npz, npz, args.n_train, args.n_val, args.healthy_share, args.seed)
        manifest = write_manifest(npz, folder / "data", TASKS[args.data]["classes"])
        print(json.dumps({"data": args.data, "splits": counts, "steps": args.steps, "lr": args.lr,
                          "warmup_ratio": args.warmup,
                          "k": args.k, "seed": args.seed}))
        for mode in args.modes.split(","):
            print(json.dumps(run_mode(mode, folder, manifest, args)), flush=True)


if __name__ == "__main__":
    main()
