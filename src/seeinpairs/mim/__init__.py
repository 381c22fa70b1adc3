"""Multi-image medical QA in the Med-MIM layout: read, validate, generate, evaluate, fine-tune, report.

* :mod:`.format`: loader/writer and validation (:class:`MimDataset`, :class:`MimItem`)
* :mod:`.prompts`: interleaved multi-image requests, the single-image ablation
* :mod:`.generate`: questions per ability from any case table (:func:`generate_qa`)
* :mod:`.evaluate` / :mod:`.metrics`: option log-likelihood or generate-and-parse, open-ended text metrics,
  accuracy per ability, source and split with bootstrap CIs
* :mod:`.train`: multi-image SFT through :func:`seeinpairs.training.train_on_examples`
* :mod:`.report` / :mod:`.demo`: the report section and the offline demo
"""

from importlib import import_module
from typing import Any

#: public name -> submodule; loaded on first use so that reading the file layout (the CLI's
#: help, ``mim validate``) does not import torch and transformers through evaluation
_EXPORTS = {
    "MimEvaluation": "evaluate", "evaluate": "evaluate", "predict": "evaluate",
    "FileKind": "format", "MimDataset": "format", "MimFormatError": "format", "MimItem": "format",
    "file_kind": "format", "load_mim_file": "format", "read_mim_file": "format", "write_mim_file": "format",
    "QA_GENERATORS": "generate", "QAGenConfig": "generate", "generate_qa": "generate",
    "OPEN_METRICS": "metrics", "extract_letter": "metrics", "summarise": "metrics",
    "build_request": "prompts",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
