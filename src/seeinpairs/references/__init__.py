"""Reference banks (healthy controls) and the selectors that pick references from them."""

from .bank import ReferenceBank
from .selectors import SELECTORS, Selection, Selector, create_selector, list_selectors

__all__ = ["SELECTORS", "ReferenceBank", "Selection", "Selector", "create_selector", "list_selectors"]
