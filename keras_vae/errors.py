"""The package's error type for what a user can get wrong.

The command lines catch `UsageError` (and `OSError`) at their boundary and
exit 2 with its one-line message; every other exception keeps its
traceback, because it is a bug. It subclasses `ValueError`, so code that
catches `ValueError` keeps working.
"""


class UsageError(ValueError):
    """Bad input from a user: a flag, a file, a dataset, a combination of options."""


class Interrupted(KeyboardInterrupt):
    """A Ctrl-C caught by the library, with a line for the user: what was kept
    and the command that goes on. The command lines print it and exit 130."""
