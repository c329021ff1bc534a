"""Errors that the CLI turns into one clear line and an exit code."""


class UserError(Exception):
    """Bad input from the user (recipe, vocabulary, flags): exit code 2, nothing written."""

    exit_code = 2


class RunError(Exception):
    """A run could not start or continue (engine unreachable, output dir conflict): exit code 1."""

    exit_code = 1
