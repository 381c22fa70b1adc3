"""Layer-wise representation analysis of the query image.

For each language-model layer, the query image's hidden states (mean over its
tokens) are compared with the hidden states of each class description written
as text (mean over its tokens, same layer): the cosine to the gold class, the
cosine margin (gold minus the best other class), linear CKA between the query
states and the gold-class text states over cases, and the cross-validated
accuracy of a linear probe that predicts the label from the query states. A
single-image and a paired model are compared on the same cases; the paired
prompt adds references but the pooled tokens are always the query's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..backends.encoding import chat_prompt, encode_prompts
from ..prompts import Request
from .layouts import layout_for


def _to_device(inputs: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


@torch.no_grad()
def query_states(model, processor, requests: Sequence[Request]) -> np.ndarray:
    """(cases, layers + 1, hidden): the last image's tokens, mean-pooled, at every hidden-state output."""
    layout = layout_for(model, processor)
    device = next(model.parameters()).device
    rows = []
    for request in requests:
        encoded = encode_prompts(processor, [chat_prompt(processor, request)], [request.images], "right")
        positions = layout.slots(encoded, [(image.height, image.width) for image in request.images])[-1].token_positions
        hidden = model(**_to_device(encoded, device), use_cache=False, output_hidden_states=True).hidden_states
        rows.append(torch.stack([h[0, positions].float().mean(0) for h in hidden]).cpu().numpy())
    return np.stack(rows)


@torch.no_grad()
def text_states(model, processor, texts: Sequence[str]) -> np.ndarray:
    """(texts, layers + 1, hidden): each text's tokens (no chat template), mean-pooled, at every layer."""
    device = next(model.parameters()).device
    rows = []
    for text in texts:
        ids = processor.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(device)
        hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False,
                       output_hidden_states=True).hidden_states
        rows.append(torch.stack([h[0].float().mean(0) for h in hidden]).cpu().numpy())
    return np.stack(rows)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear centred kernel alignment between two (n, d) representations of the same n cases."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    cross = np.linalg.norm(y.T @ x, "fro") ** 2
    norm = np.linalg.norm(x.T @ x, "fro") * np.linalg.norm(y.T @ y, "fro")
    return float(cross / norm) if norm > 0 else float("nan")


def _unit(values: np.ndarray) -> np.ndarray:
    return values / np.clip(np.linalg.norm(values, axis=-1, keepdims=True), 1e-12, None)


def probe_accuracy(features: np.ndarray, labels: Sequence[str], folds: int = 5, seed: int = 0) -> float:
    """Mean stratified k-fold accuracy of a standardised logistic-regression probe (NaN when too few per class)."""
    labels = np.asarray(labels)
    _, counts = np.unique(labels, return_counts=True)
    folds = min(folds, int(counts.min())) if len(counts) > 1 else 0
    if folds < 2:
        return float("nan")
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(cross_val_score(probe, features, labels, cv=splitter).mean())


def layer_alignment(queries: np.ndarray, classes: np.ndarray, class_names: Sequence[str],
                    labels: Sequence[str], seed: int = 0) -> pd.DataFrame:
    """One row per layer: cosine to the gold class text, cosine margin, CKA, probe accuracy."""
    index = {name: i for i, name in enumerate(class_names)}
    gold = np.array([index[str(label)] for label in labels])
    rows = []
    for layer in range(queries.shape[1]):
        q = _unit(queries[:, layer])
        c = _unit(classes[:, layer])
        cos = q @ c.T  # (cases, classes)
        gold_cos = cos[np.arange(len(gold)), gold]
        others = np.where(np.eye(len(class_names), dtype=bool)[gold], -np.inf, cos).max(1)
        rows.append({"layer": layer, "cosine_gold": float(gold_cos.mean()),
                     "cosine_margin": float((gold_cos - others).mean()),
                     "cka": linear_cka(queries[:, layer], classes[gold, layer]),
                     "probe_accuracy": probe_accuracy(queries[:, layer], [str(v) for v in labels], seed=seed)})
    return pd.DataFrame(rows)
