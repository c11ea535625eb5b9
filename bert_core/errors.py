"""The one exception type for a user's mistake.

A `UserError` is printed by the `bert` command as a single line (no traceback) and exits non-zero.
Its message names the file, line or field and what was expected.
"""


class UserError(Exception):
    """Bad input from the user: a missing file, a malformed line, an invalid flag value."""

    exit_code = 2


def where(path: str, line: int | None = None) -> str:
    """`path` or `path:line`, the prefix every input error starts with."""
    return f"{path}:{line}" if line is not None else str(path)
