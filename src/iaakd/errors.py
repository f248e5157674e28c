"""Errors a user can cause; stage entry points turn them into one clear line and a non-zero exit."""


class UserError(Exception):
    """Bad input or bad parameters: the message names the file, row or key, and what to do."""


def first_line(error: BaseException, limit: int | None = None) -> str:
    """The first line of ``error``'s message, at most ``limit`` characters, else its type's name: an error
    told in one line of output."""
    message = str(error).strip()
    return (message.splitlines()[0] if message else type(error).__name__)[:limit]
