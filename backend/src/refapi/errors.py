"""The failures refapi reports to an operator instead of a traceback."""


class RefapiError(Exception):
    """Base class: the message is one line a person can act on."""


class ConfigError(RefapiError):
    """An environment variable has a value refapi cannot use."""


class MigrationError(RefapiError):
    """The database could not be brought to the head revision."""
