"""Evaluation and multi-image SFT with a tiny model on the exact-layout fixtures and generated items."""

import numpy as np
import pytest

from seeinpairs.backends.hf import HFBackend
from seeinpairs.mim.evaluate import evaluate, predict
from seeinpairs.mim.format import MimDataset
from seeinpairs.mim.prompts import build_request
from seeinpairs.mim.train import MimExamples, train_mim
from seeinpairs.training import SFTSettings


@pytest.fixture(scope="module")
def backend(tiny_models):
    return HFBackend(tiny_models["qwen2_vl"], device="cpu", batch_size=8)


def test_loglik_predictions_are_the_best_scored_option(mim_files, backend):
    files, roots = mim_files
    dataset = MimDataset.load(list(files.values()), roots)
    frame = predict(backend, dataset, batch_size=2)
    assert list(frame["uid"]) == [i.uid for i in dataset]
    for item, (_, row) in zip(dataset, frame.iterrows()):
        if item.multiple_choice:
            scores = backend.score_options([build_request(item, dataset.images(item))])[0]
            assert row["pred"] == "ABCD"[int(np.argmax(scores))] and row["correct"] == float(row["pred"] == row["gold"])
            assert row["n_shown"] == len(item.images) and not isinstance(row["text"], str)
        else:
            assert isinstance(row["text"], str) and np.isnan(row["correct"])
    single = predict(backend, dataset, keep="first")
    assert (single["n_shown"] == 1).all()


def test_evaluate_summarises_generate_and_open_ended(mim_files, backend):
    files, roots = mim_files
    dataset = MimDataset.load(list(files.values()), roots)
    result = evaluate(backend, dataset, method="generate", n_boot=50, max_new_tokens=4)
    frame, summary = result.predictions, result.summary
    mc = frame[~frame["open"]]
    assert mc["parse_failed"].isin([0.0, 1.0]).all()
    assert (mc.loc[mc["parse_failed"] == 1, "correct"] == 0).all()  # failures count as wrong
    held_in = summary[(summary.level == "split") & (summary.group == "held_in")].iloc[0]
    assert held_in["n"] == 3 and held_in["n_open"] == 1
    assert held_in["parse_failure_rate"] == pytest.approx(mc[mc.split == "held_in"]["parse_failed"].mean())
    assert {"open_bleu", "open_rouge_l", "open_embedding"} <= set(frame.columns)
    assert set(summary[summary.level == "dataset"]["group"]) == {"MS_CXR_T", "VQA_ODIR"}
    assert set(summary[summary.level == "subset"]["group"]) == {"temporal", "coreference", "odir"}


def test_multi_image_sft_learns_the_training_items(mim_files, tmp_path):
    """A few full-training steps on the fixture items raise the gold answers' scores."""
    files, roots = mim_files
    dataset = MimDataset.load([files["temporal"], files["coreference"], files["odir"]], roots)
    examples = MimExamples(dataset)
    assert len(examples) == 5 and examples[4].answer == "B: right eye" and examples[0].request.n_images == 2
    settings = SFTSettings.from_dict({"model": {"tiny": "qwen2_vl", "device": "cpu"}, "batch_size": 5, "lr": 5e-3,
                                      "max_steps": 12, "eval_every": 6, "warmup_ratio": 0.0,
                                      "output_dir": str(tmp_path / "run")})
    result = train_mim(settings, dataset, dataset, progress=False)
    assert [h["step"] for h in result.history] == [6, 12]
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    before = HFBackend(result.output_dir / "base_model", device="cpu")
    after = HFBackend.from_components(result.model, result.processor)
    mc = dataset.subset(lambda item: item.multiple_choice)
    acc_before = evaluate(before, mc, n_boot=10).predictions["correct"].mean()
    acc_after = evaluate(after, mc, n_boot=10).predictions["correct"].mean()
    assert acc_after == 1.0 and acc_after >= acc_before
