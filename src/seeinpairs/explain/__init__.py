"""Evidence: attribution maps, localization scores, reference use and representation analysis."""

from .attribution import (
    ATTENTION_METHODS,
    GRADIENT_METHODS,
    Explanation,
    RequestExplainer,
)
from .layouts import ExplainError, layout_for

__all__ = ["ATTENTION_METHODS", "GRADIENT_METHODS", "ExplainError", "Explanation", "RequestExplainer", "layout_for"]
