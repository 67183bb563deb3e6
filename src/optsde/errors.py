"""The one exception type users see as a one-line message (never a traceback)."""


class OptsdeError(ValueError):
    """Bad input: the message says what is wrong and how to fix it."""
