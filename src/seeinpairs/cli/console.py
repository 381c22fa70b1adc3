"""The consoles every command prints through: plain text, never Rich markup.

Printed text carries user-derived strings (file names, labels, case ids, error
messages quoting values such as ``[normal, abnormal]`` or ``[/x]``). Rich would
read those as markup tags and drop them or raise ``MarkupError``, so markup and
emoji codes are switched off on the console itself rather than escaped at each
call; styling, where wanted, is given as a ``style`` argument.
"""

from __future__ import annotations

import sys

from rich.console import Console


def make_console(stderr: bool = False) -> Console:
    """A console that prints strings as given (no markup, no ``:emoji:`` codes); 200 columns when piped."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, markup=False, emoji=False, width=None if stream.isatty() else 200)
