"""Errors a user can fix: the CLI prints their message as one line and exits with code 2."""


class UserError(Exception):
    """A problem with the user's input, configuration or files (not a bug)."""


class ConfigError(UserError):
    """A configuration value or combination that cannot work."""


class DataError(UserError):
    """Dataset files missing, unreadable or not downloadable."""
