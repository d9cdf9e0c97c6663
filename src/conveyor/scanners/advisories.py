"""An offline OSV mirror: a directory of OSV advisories answering the OSV ``/v1/query`` API.

``pip-audit -s osv --osv-url http://127.0.0.1:PORT/v1/query`` asks it exactly what it would ask
api.osv.dev, so an audit works with no network at all and with real advisory data: the PyPA
advisory database (``vulns/<project>/<id>.yaml``) or any folder of OSV ``.json``/``.yaml`` files.

pip-audit trusts the service to decide whether a version is affected, so that decision is made
here, per the OSV schema: a version is affected when it is listed in ``versions`` or falls in an
``ECOSYSTEM`` (or ``SEMVER``) range — ``introduced <= v < fixed``, or ``<= last_affected`` —
compared with :mod:`packaging`'s PEP 440 ordering. Withdrawn advisories are never returned.

The server only ever binds to the address it is given (127.0.0.1 by default) and is meant to
live as long as one audit: :func:`serving` starts it on a free port in a thread.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from conveyor.errors import ConveyorError

ENV_DB = "CONVEYOR_ADVISORY_DB"
# Where the PyPA snapshot lives next to a checkout: <repo>/../shared/advisories/<db>.
DEFAULT_DB_FROM_ROOT = Path("..", "shared", "advisories", "pypa-advisory-database")
ECOSYSTEM = "PyPI"
_RANGE_TYPES = ("ECOSYSTEM", "SEMVER")
_MAX_BODY = 1 << 20


class AdvisoryError(ConveyorError):
    """The advisory database is missing or unreadable."""


def canonical_name(name: str) -> str:
    """PEP 503 normalisation: ``Flask_Caching`` and ``flask-caching`` are one project."""
    return re.sub(r"[-_.]+", "-", name).lower()


def default_db(root: Path) -> Path:
    """``$CONVEYOR_ADVISORY_DB``, else ``<root>/../shared/advisories/pypa-advisory-database``."""
    override = os.environ.get(ENV_DB)
    if override:
        return Path(override)
    return (root / DEFAULT_DB_FROM_ROOT).resolve()


def _version(text: object) -> Version | None:
    try:
        return Version(str(text))
    except InvalidVersion:
        return None


def _range_affects(version: Version, events: list[Mapping[str, Any]]) -> bool:
    """The OSV evaluation of one range: walk its events in version order."""
    points: list[tuple[Version, int, str]] = []
    for event in events:
        for kind, raw in event.items():
            if kind not in ("introduced", "fixed", "last_affected", "limit"):
                continue
            if kind == "introduced" and str(raw) == "0":
                point: Version | None = Version("0")
            else:
                point = _version(raw)
            if point is None:
                continue  # a version PEP 440 cannot order: no basis to compare
            # At equal versions "introduced" comes first, so [introduced, fixed) stays half-open.
            points.append((point, 0 if kind == "introduced" else 1, kind))
    affected = False
    limited = False
    for point, _, kind in sorted(points):
        if kind == "introduced" and version >= point:
            affected = True
        elif (kind == "fixed" and version >= point) or (
            kind == "last_affected" and version > point
        ):
            affected = False
        elif kind == "limit" and version >= point:
            limited = True
    return affected and not limited


def affects(advisory: Mapping[str, Any], package: str, version: str) -> bool:
    """Whether ``advisory`` says ``package==version`` (PyPI) is vulnerable."""
    if advisory.get("withdrawn"):
        return False
    wanted = canonical_name(package)
    parsed = _version(version)
    for affected in advisory.get("affected") or []:
        pkg = affected.get("package") or {}
        if pkg.get("ecosystem") != ECOSYSTEM or canonical_name(str(pkg.get("name", ""))) != wanted:
            continue
        listed = [str(v) for v in affected.get("versions") or []]
        if version in listed:
            return True
        if parsed is None:
            continue
        if any(_version(v) == parsed for v in listed):
            return True
        for rng in affected.get("ranges") or []:
            if rng.get("type") in _RANGE_TYPES and _range_affects(parsed, rng.get("events", [])):
                return True
    return False


def _load_file(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return json.loads(text)
    try:
        # Imported by name: only YAML databases need PyYAML, and it ships without type hints.
        yaml: Any = importlib.import_module("yaml")
    except ImportError:
        raise AdvisoryError(
            f"{path}: reading YAML advisories needs PyYAML — run inside `nox -s scan`"
        ) from None
    if hasattr(yaml, "CSafeLoader"):  # libyaml: ~10x faster on the 2,600 PyPA advisories
        return yaml.load(text, Loader=yaml.CSafeLoader)
    return yaml.safe_load(text)


@dataclass
class AdvisoryDB:
    """Every advisory of a folder, indexed by canonical PyPI project name."""

    path: Path
    by_package: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    count: int = 0
    snapshot: str = ""

    @classmethod
    def load(cls, path: Path) -> AdvisoryDB:
        if not path.is_dir():
            raise AdvisoryError(
                f"no advisory database at {path} — set {ENV_DB} to a folder of OSV advisories"
            )
        db = cls(path=path)
        files = sorted(
            p for p in path.rglob("*") if p.suffix in (".yaml", ".yml", ".json") and p.is_file()
        )
        for file in files:
            try:
                advisory = _load_file(file)
            except AdvisoryError:
                raise
            except Exception as exc:  # OSError, JSON or YAML errors: no common base to name
                raise AdvisoryError(f"{file}: not a readable OSV advisory ({exc})") from None
            if not isinstance(advisory, dict) or "id" not in advisory:
                continue  # README-like files or other JSON that is not an advisory
            db.add(advisory)
        if db.count == 0:
            raise AdvisoryError(f"{path} holds no OSV advisories (.yaml, .yml or .json with an id)")
        snapshot = path / "SNAPSHOT"
        if snapshot.is_file():
            db.snapshot = snapshot.read_text(encoding="utf-8").strip().splitlines()[0]
        return db

    def add(self, advisory: dict[str, Any]) -> None:
        names = {
            canonical_name(str((a.get("package") or {}).get("name", "")))
            for a in advisory.get("affected") or []
            if (a.get("package") or {}).get("ecosystem") == ECOSYSTEM
        }
        for name in names:
            self.by_package.setdefault(name, []).append(advisory)
        self.count += 1

    def query(self, package: str, version: str) -> list[dict[str, Any]]:
        """Advisories affecting ``package==version``, sorted by id."""
        candidates = self.by_package.get(canonical_name(package), [])
        found = [a for a in candidates if affects(a, package, version)]
        return sorted(found, key=lambda a: str(a["id"]))


def parse_query(body: Mapping[str, Any]) -> tuple[str, str]:
    """The (package, version) of an OSV v1 query; PyPI only, by name+version or by purl."""
    package = body.get("package") or {}
    if not isinstance(package, Mapping):
        raise ValueError("'package' must be an object")
    purl = package.get("purl")
    if purl:
        match = re.fullmatch(r"pkg:pypi/([^@?#]+)@([^?#]+)", str(purl))
        if not match:
            raise ValueError(f"unsupported purl {purl!r} (only pkg:pypi/NAME@VERSION)")
        return match[1], match[2]
    if "commit" in body:
        raise ValueError("commit queries are not supported by this mirror")
    ecosystem = package.get("ecosystem")
    if ecosystem != ECOSYSTEM:
        raise ValueError(f"only the {ECOSYSTEM} ecosystem is mirrored, not {ecosystem!r}")
    name, version = package.get("name"), body.get("version")
    if not name or not version:
        raise ValueError("a query needs package.name and version")
    return str(name), str(version)


class _Handler(BaseHTTPRequestHandler):
    server: MirrorServer
    protocol_version = "HTTP/1.1"
    # Keep-alive with headers and body written separately meets delayed ACKs: ~40 ms per
    # query without this, for a hundred queries per audit.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        return  # pip-audit makes one request per dependency: keep the console for results

    def _reply(self, status: int, payload: Mapping[str, Any]) -> None:
        data = json.dumps(payload, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        db = self.server.db
        self._reply(
            200,
            {
                "service": "conveyor OSV mirror",
                "advisories": db.count,
                "packages": len(db.by_package),
                "snapshot": db.snapshot,
            },
        )

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/query":
            self._reply(404, {"code": 5, "message": f"no such endpoint: {self.path}"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            self._reply(413, {"code": 3, "message": "query too large"})
            return
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the query must be a JSON object")
            package, version = parse_query(body)
        except ValueError as exc:
            self._reply(400, {"code": 3, "message": str(exc)})
            return
        vulns = self.server.db.query(package, version)
        self.server.count_query()
        # OSV answers {} when nothing matches; pip-audit relies on that shape.
        self._reply(200, {"vulns": vulns} if vulns else {})


class MirrorServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, db: AdvisoryDB, host: str = "127.0.0.1", port: int = 0) -> None:
        self.db = db
        self.queries = 0
        self._lock = threading.Lock()
        super().__init__((host, port), _Handler)

    def count_query(self) -> None:
        with self._lock:
            self.queries += 1

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/v1/query"


@contextmanager
def serving(db: AdvisoryDB, host: str = "127.0.0.1", port: int = 0) -> Iterator[MirrorServer]:
    """Serve ``db`` in a background thread for the duration of the block."""
    server = MirrorServer(db, host, port)
    # A short poll interval: shutdown() waits for the loop to notice, once per audit.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="osv-mirror", daemon=True
    )
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
