"""The one error type users see: a short message that says what to do."""


class AiosError(Exception):
    """A user-facing error: one line, no traceback needed, nothing was changed."""
