"""The mistakes a user can fix, in one hierarchy.

Both command lines (`python -m curate`, `python -m train`) catch `UserError` and print it as one
`error:` line with exit code 2: a bad path, a bad config key, a model or cluster that cannot be
reached. Everything else is either data (a row with an error value) or a bug (a traceback).
This module imports nothing, so any module, however light, can raise these.
"""


class UserError(Exception):
    """A mistake the user can fix; the message says what and how."""


class ConfigError(UserError, ValueError):
    """A bad config file, `--set` override or command-line value."""


class InputError(UserError, ValueError):
    """Inputs that cannot be used: a missing path, an unreadable list, no videos at all."""


class StorageError(UserError):
    """An object store that cannot be reached: a wrong bucket, missing credentials or package."""


class ModelUnavailable(UserError):
    """A model's weights cannot be loaded; the message names the model and how to provide it."""


class ClusterUnavailable(UserError):
    """Ray is missing or its cluster cannot be reached."""
