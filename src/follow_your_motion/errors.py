"""The one exception type for bad input, so a failure of the user's making is told apart from a bug.

`fym` turns an `InputError` into one line and exit code 2; any other exception keeps its traceback. It is a
`ValueError`, so code that catches bad values keeps working.
"""

from __future__ import annotations


class InputError(ValueError):
    """A file, setting, model or run directory the user gave cannot be used; the message names it and says
    what would work."""
