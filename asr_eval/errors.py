"""The one exception type for errors a user can cause (bad path, unknown layout, missing model).

Its message names the thing and the fix; the CLI prints it without a traceback.
"""


class AsrEvalError(Exception):
    """A user-facing error: the message must name the offending file/value and how to fix it."""
