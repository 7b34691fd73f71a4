"""Errors whose message tells the user what to do; the CLI prints them without a traceback."""


class UserFacingError(RuntimeError):
    """A clear, actionable failure (missing tool, service down, bad argument)."""
