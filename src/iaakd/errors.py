"""Errors a user can cause; stage entry points turn them into one clear line and a non-zero exit."""


class UserError(Exception):
    """Bad input or bad parameters: the message names the file, row or key, and what to do."""
