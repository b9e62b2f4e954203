"""The one model error users see: kept free of torch so the CLI can catch it cheaply."""


class ModelUnavailable(Exception):
    """A model's weights cannot be loaded; the message names the model and how to provide it."""
