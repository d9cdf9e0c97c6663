"""Typed errors. One edge, :func:`conveyor.cli.main` (behind ``python -m conveyor``, the invoke
tasks and the nox sessions), turns them into one line on stderr and an exit code; everything
below raises one of these with a sentence a person can act on.
"""

from __future__ import annotations


class ConveyorError(Exception):
    """Base class: the message is one line saying what went wrong and what to do."""

    exit_code = 1


class ConfigError(ConveyorError):
    """deploy.toml (or another config) is invalid."""

    exit_code = 2


class UsageError(ConveyorError):
    """The command line asked for something that does not exist."""

    exit_code = 2


class EngineUnavailable(ConveyorError):
    """No Docker engine answers at the configured endpoint."""


class ImageError(ConveyorError):
    """An image could not be built, found, pushed or pulled."""


class ArtifactError(ConveyorError):
    """An artifact is missing or fails verification."""


class RegistryError(ConveyorError):
    """The registry refused or could not be reached."""


class LockHeld(ConveyorError):
    """Another deploy holds the environment's lock."""


class LockLost(ConveyorError):
    """This deploy's lock was removed or taken over while it ran: it must not switch."""


class SecretDeliveryFailed(ConveyorError):
    """A secret file could not be written into a started service container."""


class DeployFailed(ConveyorError):
    """A deploy failed; the previously live release is still serving."""


class ToolTimeout(ConveyorError):
    """An external tool did not finish within its time limit."""


class MigrationFailed(ConveyorError):
    """A release's migration, backup or restore failed; ``tail`` is the end of its output."""

    def __init__(self, message: str, tail: str = "") -> None:
        super().__init__(message)
        self.tail = tail


class SchemaMismatch(ConveyorError):
    """A rollback target does not accept the database's schema (a contract revision ran)."""


class StateUnwritable(ConveyorError):
    """The environment's state volume refused a write (full, read-only, or no permission):
    ``problem`` says what and where, ``action`` what to do about the volume."""

    def __init__(self, problem: str, action: str, then: str = "then re-run") -> None:
        super().__init__(f"{problem} — {action}, {then}")
        self.problem = problem
        self.action = action
