"""Multi-image medical QA in the Med-MIM layout: read, validate, generate, evaluate, fine-tune, report.

* :mod:`.format`: loader/writer and validation (:class:`MimDataset`, :class:`MimItem`)
* :mod:`.prompts`: interleaved multi-image requests, the single-image ablation
* :mod:`.generate`: questions per ability from any case table (:func:`generate_qa`)
* :mod:`.evaluate` / :mod:`.metrics`: option log-likelihood or generate-and-parse, open-ended text metrics,
  accuracy per ability, source and split with bootstrap CIs
* :mod:`.train`: multi-image SFT through :func:`seeinpairs.training.train_on_examples`
* :mod:`.report` / :mod:`.demo`: the report section and the offline demo
"""

from .evaluate import MimEvaluation, evaluate, predict
from .format import (
           FileKind,
           MimDataset,
           MimFormatError,
           MimItem,
           file_kind,
           load_mim_file,
           write_mim_file,
)
from .generate import QA_GENERATORS, QAGenConfig, generate_qa
from .metrics import OPEN_METRICS, extract_letter, summarise
from .prompts import build_request

__all__ = ["OPEN_METRICS", "QA_GENERATORS", "FileKind", "MimDataset", "MimEvaluation", "MimFormatError", "MimItem",
           "QAGenConfig", "build_request", "evaluate", "extract_letter", "file_kind", "generate_qa", "load_mim_file",
           "predict", "summarise", "write_mim_file"]
