"""User-facing errors.

Anything the user can fix (bad option, missing file, unsupported model) raises
``UserError``. The CLI turns it into one line on stderr and exit code 2; no traceback
unless ``LLMSPARSE_DEBUG=1``.
"""


class UserError(Exception):
    """An error caused by the user's input, with a message that says what to do."""
