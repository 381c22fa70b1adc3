"""seeinpairs: reference-guided comparative diagnosis with vision-language models."""

from .cases import Case, CaseTable
from .errors import SeeInPairsError
from .prompts import PromptBuilder, Request
from .tasks import Task

__version__ = "0.1.0"
__all__ = ["Case", "CaseTable", "PromptBuilder", "Request", "SeeInPairsError", "Task", "__version__"]
