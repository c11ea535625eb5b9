"""The one exception type for a user's mistake, and how a command line reports it.

A `UserError` is printed by the `bert` command as a single line (no traceback) and exits non-zero.
Its message names the file, line or field and what was expected.
"""

from __future__ import annotations

import sys
from typing import Callable, NoReturn


class UserError(Exception):
    """Bad input from the user: a missing file, a malformed line, an invalid flag value."""

    exit_code = 2


def where(path: str, line: int | None = None) -> str:
    """`path` or `path:line`, the prefix every input error starts with."""
    return f"{path}:{line}" if line is not None else str(path)


def exit_from(prog: str, run: Callable[[list[str] | None], int], argv: list[str] | None = None) -> NoReturn:
    """Run a command's `run(argv)` and exit with its code; a UserError is one `prog: error: ...` line
    on stderr and its exit code, Ctrl-C is `prog: interrupted` and 130. Both CLIs end here."""
    try:
        code = run(argv)
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        code = err.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
