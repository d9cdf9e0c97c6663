"""An OpenFeature provider that evaluates a flagd flag file in process, watching it for changes.

The definitions are flagd's format (https://flagd.dev/schema/v0/flags.json) and evaluation is
flagd's own evaluator, ``openfeature-flagd-core`` (the one openfeature-provider-flagd runs in its
in-process mode): the same JsonLogic targeting and ``fractional`` bucketing, which hashes the
flag key with the targeting key, so a person keeps their bucket while a ramp only moves the
boundary. What this module adds is the file watching, without the flagd provider's gRPC stack:

- With no file (FLAGS_FILE unset) it serves the definitions packaged with refapi.
- With a file it polls every POLL_INTERVAL seconds and compares the content's SHA-256, not the
  modification time: conveyor replaces the file by rename, often twice within one second, and
  an archive upload stamps whole seconds, so an mtime check would miss the second change.
- A missing, unreadable or invalid file leaves the last good definitions in force (the packaged
  ones until a good file was read), says so in one log line per bad version, and marks the
  provider STALE until a good version arrives. Definitions are swapped whole, never in part.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import OpenFeatureError
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType
from openfeature.provider import AbstractProvider, Metadata

POLL_INTERVAL = 0.5
PACKAGED = "packaged"
# Where the wheel puts backend/flags.json; a source checkout (an editable install) reads the
# file itself, two levels above the package.
DEFINITIONS_NAME = "flags.json"
SOURCE_TREE_DEFINITIONS = Path(__file__).resolve().parents[2] / DEFINITIONS_NAME

logger = logging.getLogger("refapi.flags")


class FlagFileError(Exception):
    """Flag definitions that cannot be used; the message fits on one line."""


@dataclass(frozen=True)
class Definitions:
    """One good version of the flag definitions, ready to evaluate."""

    evaluator: FlagdCore
    sha256: str
    source: str
    # Each flag's definition as written, and its variants' names (what /metrics lists).
    flags: Mapping[str, Any]
    variants: Mapping[str, tuple[str, ...]]


def parse(raw: bytes, source: str) -> Definitions:
    """Check ``raw`` as flagd definitions and load it into a fresh evaluator."""
    try:
        data = json.loads(raw)
    except UnicodeDecodeError:
        raise FlagFileError("not UTF-8 text") from None
    except ValueError as exc:
        raise FlagFileError(f"not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("flags"), dict):
        raise FlagFileError("expected a JSON object with a 'flags' object")
    variants = {
        str(name): tuple(str(v) for v in flag["variants"])
        for name, flag in data["flags"].items()
        if isinstance(flag, dict) and isinstance(flag.get("variants"), dict)
    }
    evaluator = FlagdCore()
    try:
        # flagd-core rewrites what it is given (defaultVariant, $ref); keep the original.
        evaluator.set_flags(copy.deepcopy(data))
    except OpenFeatureError as exc:
        raise FlagFileError(f"not flagd's flag format ({exc.error_message or exc})") from None
    except Exception as exc:  # flagd-core lets other errors of odd input through
        raise FlagFileError(f"not flagd's flag format ({type(exc).__name__}: {exc})") from None
    digest = hashlib.sha256(raw).hexdigest()
    return Definitions(evaluator, digest, source, data["flags"], variants)


def packaged_definitions() -> bytes:
    """The release's own definitions: backend/flags.json, carried in the wheel."""
    packaged = resources.files("refapi").joinpath(DEFINITIONS_NAME)
    if packaged.is_file():
        return packaged.read_bytes()
    return SOURCE_TREE_DEFINITIONS.read_bytes()


class FlagFileProvider(AbstractProvider):
    """Evaluates the definitions in ``path`` (or the packaged ones when ``path`` is None)."""

    def __init__(self, path: Path | None, *, interval: float = POLL_INTERVAL) -> None:
        super().__init__()
        self.path = path
        self.interval = interval
        self._current = parse(packaged_definitions(), PACKAGED)
        self._stale = False
        # The content of the last bad version reported, so a bad file is said once.
        self._reported: str | None = None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._refresh_lock = threading.Lock()

    # --- what the app and its metrics read -----------------------------------------------

    @property
    def definitions(self) -> Definitions:
        return self._current

    @property
    def stale(self) -> bool:
        """True while the file is missing or bad and the last good definitions are served."""
        return self._stale

    # --- lifecycle --------------------------------------------------------------------------

    def get_metadata(self) -> Metadata:
        return Metadata(name="refapi-flag-file")

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        if self.path is None:
            logger.info("refapi: flags: the packaged definitions (FLAGS_FILE is not set)")
            return
        self.refresh()
        self._stop.clear()
        self._watcher = threading.Thread(target=self._watch, name="refapi-flag-file", daemon=True)
        self._watcher.start()

    def shutdown(self) -> None:
        self._stop.set()
        watcher, self._watcher = self._watcher, None
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(timeout=5)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.refresh()
            except Exception as exc:  # the watcher must outlive any surprise
                self._report(f"watcher error {type(exc).__name__}", f"{exc}")

    def refresh(self) -> bool:
        """Read the file once; load it when its content changed. True when it was loaded."""
        if self.path is None:
            return False
        with self._refresh_lock:
            try:
                raw = self.path.read_bytes()
            except FileNotFoundError:
                self._report("missing", "no such file")
                return False
            except OSError as exc:
                self._report(f"unreadable {exc.errno}", f"cannot read it ({exc.strerror})")
                return False
            digest = hashlib.sha256(raw).hexdigest()
            # The packaged content read from the file still counts as a load: the file is
            # then the source in force, and the start is logged.
            if digest == self._current.sha256 and self._current.source != PACKAGED:
                self._recovered()
                return False
            if digest == self._reported:
                return False
            try:
                definitions = parse(raw, str(self.path))
            except FlagFileError as exc:
                self._report(digest, str(exc))
                return False
            changed = _changed(self._current, definitions)
            self._current = definitions
            self._reported = None
            self._stale = False
        logger.info(
            "refapi: flags loaded from %s (sha256 %s; changed: %s)",
            self.path,
            digest[:12],
            ", ".join(changed) or "none",
        )
        self.emit_provider_configuration_changed(ProviderEventDetails(flags_changed=changed))
        return True

    def _report(self, what: str, why: str) -> None:
        if what == self._reported:
            return
        self._reported = what
        self._stale = True
        kept = (
            "the packaged defaults" if self._current.source == PACKAGED else "the last good flags"
        )
        logger.warning("refapi: flags file %s: %s; serving %s", self.path, why, kept)
        self.emit_provider_stale(ProviderEventDetails(message=why))

    def _recovered(self) -> None:
        # The file is back to the content in force (e.g. a bad write undone).
        if self._stale:
            self._stale = False
            self._reported = None
            logger.info("refapi: flags file %s is good again", self.path)
            self.emit_provider_ready(ProviderEventDetails())

    # --- evaluation -------------------------------------------------------------------------

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        return self._current.evaluator.resolve_boolean_value(
            flag_key, default_value, evaluation_context
        )

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return self._current.evaluator.resolve_string_value(
            flag_key, default_value, evaluation_context
        )

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return self._current.evaluator.resolve_integer_value(
            flag_key, default_value, evaluation_context
        )

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        return self._current.evaluator.resolve_float_value(
            flag_key, default_value, evaluation_context
        )

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        return self._current.evaluator.resolve_object_value(
            flag_key, default_value, evaluation_context
        )


def _changed(old: Definitions, new: Definitions) -> list[str]:
    names = old.flags.keys() | new.flags.keys()
    return sorted(name for name in names if old.flags.get(name) != new.flags.get(name))
