"""An image-only reference model trained by the study itself, on the same splits as the VLMs.

Published anchors (e.g. MedMNIST's ResNet-18) come from other splits and other
code; a baseline trained here on exactly the cases the VLMs see tells a reader
whether the VLM figures are in a plausible range. Both baselines are
deliberately plain: images resized to a small grayscale (or RGB) thumbnail and
standardised, then either multinomial logistic regression or a two-block
convolutional network trained for a fixed number of epochs. Their predictions use
the evaluation record format, so the same metrics, bootstrap intervals and tests
apply.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..cases import Case, CaseTable
from ..errors import ConfigError
from ..evaluation.stats import summarise
from ..imaging import load_image
from ..registry import Registry
from ..tasks import Task


@dataclass
class BaselineResult:
    name: str
    summary: pd.DataFrame  # one row: n, metrics with CIs
    records: list[dict[str, Any]]


def pixel_features(cases: Sequence[Case], size: int = 28, color: bool = False) -> np.ndarray:
    """Each case's (first) image as a flat thumbnail in 0..1."""
    rows = []
    for case in cases:
        image = load_image(case.image).convert("RGB" if color else "L").resize((size, size), Image.BILINEAR)
        rows.append(np.asarray(image, dtype=np.float32).reshape(-1) / 255.0)
    return np.stack(rows) if rows else np.zeros((0, size * size * (3 if color else 1)), dtype=np.float32)


def _labelled_splits(table: CaseTable, train_split: str, test_split: str) -> tuple[list[Case], list[Case]]:
    train = [x for x in table if x.split == train_split and x.label is not None]
    test = [x for x in table if x.split == test_split and x.label is not None]
    if not train or not test:
        raise ConfigError(f"baseline: needs labelled cases in splits '{train_split}' ({len(train)}) "
                          f"and '{test_split}' ({len(test)})")
    present = sorted({str(x.label) for x in train})
    if len(present) < 2:
        raise ConfigError(f"baseline: split '{train_split}' holds only the class(es) {present}")
    return train, test


def _result(name: str, test: Sequence[Case], probabilities: np.ndarray, fitted: Sequence[str], task: Task,
            n_boot: int, seed: int) -> BaselineResult:
    """Per-case records over the task's classes (a class absent from training gets probability 0)."""
    column = {cls: i for i, cls in enumerate(fitted)}
    records = []
    for case, row in zip(test, probabilities):
        probs = [float(row[column[cls]]) if cls in column else 0.0 for cls in task.classes]
        records.append({"case_id": case.case_id, "gold": case.label, "options": list(task.classes),
                        "probabilities": probs, "predicted": task.classes[int(np.argmax(probs))],
                        "patient_id": case.patient})
    summary = summarise({name: records}, task.classes, task.healthy_class, n_boot=n_boot, seed=seed)
    return BaselineResult(name, summary, records)


#: the image-only baselines a suite trains, by the name its ``baselines.kinds`` uses
BASELINES: Registry[BaselineResult] = Registry("image-only baseline")


@BASELINES.register("logistic", description="logistic regression on downsized pixels (option c)")
def logistic_baseline(table: CaseTable, task: Task, train_split: str = "train", test_split: str = "test",
                      size: int = 28, color: bool = False, c: float = 0.1, seed: int = 0,
                      n_boot: int = 1000) -> BaselineResult:
    """Train on ``train_split``, predict ``test_split``; metrics with bootstrap CIs like the VLMs'."""
    train, test = _labelled_splits(table, train_split, test_split)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000, random_state=seed))
    model.fit(pixel_features(train, size, color), [str(x.label) for x in train])
    probabilities = model.predict_proba(pixel_features(test, size, color))
    name = f"pixel logistic regression ({size}x{size}{' RGB' if color else ''})"
    return _result(name, test, probabilities, list(model.classes_), task, n_boot, seed)


def _small_cnn(channels: int, size: int, n_classes: int) -> torch.nn.Module:
    """Two conv-ReLU-pool blocks and a small classifier head: a LeNet-sized image-only reference."""
    nn = torch.nn
    flat = 32 * (size // 4) * (size // 4)
    return nn.Sequential(nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Dropout(0.25), nn.Linear(flat, 64), nn.ReLU(), nn.Linear(64, n_classes))


@BASELINES.register("cnn", description="a small CNN trained from scratch on downsized pixels (option epochs)")
def cnn_baseline(table: CaseTable, task: Task, train_split: str = "train", test_split: str = "test",
                 size: int = 28, color: bool = False, epochs: int = 30, batch_size: int = 64, lr: float = 1e-3,
                 seed: int = 0, n_boot: int = 1000) -> BaselineResult:
    """A small CNN trained from scratch (Adam, fixed epochs, no augmentation, like the VLMs' plain
    training); deterministic for a seed at a given CPU thread count."""
    if size % 4:
        raise ConfigError(f"baseline: cnn needs a size divisible by 4, got {size}")
    train, test = _labelled_splits(table, train_split, test_split)
    fitted = sorted({str(x.label) for x in train})
    channels = 3 if color else 1
    x_train = torch.from_numpy(pixel_features(train, size, color)).view(len(train), size, size, channels)
    x_test = torch.from_numpy(pixel_features(test, size, color)).view(len(test), size, size, channels)
    x_train, x_test = (x.permute(0, 3, 1, 2).contiguous() for x in (x_train, x_test))
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    y_train = torch.tensor([fitted.index(str(x.label)) for x in train])
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _small_cnn(channels, size, len(fitted))
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(train), generator=generator)
            for start in range(0, len(order), batch_size):
                batch = order[start:start + batch_size]
                loss = torch.nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        model.eval()
        with torch.no_grad():
            probabilities = torch.softmax(model(x_test), dim=-1).numpy()
    name = f"small CNN ({size}x{size}{' RGB' if color else ''}, {epochs} epochs)"
    return _result(name, test, probabilities, fitted, task, n_boot, seed)
