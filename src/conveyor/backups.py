"""Backups of a service's database, taken before any migration and put back on request.

Each environment keeps its backups in its own volume (``conveyor-<env>-backups``, never the
state volume), one file per backup, named by the ledger record that took it:

- SQLite: the online backup API (``sqlite3.Connection.backup``) from a one-off container of
  the release's image, which has Python; the copy is consistent while the service writes.
- PostgreSQL: ``pg_dump --format=custom`` from ``backup_image`` (its major version must match
  the server's; scripts/setup builds ``localhost/conveyor-pgtools:15`` offline), restored in
  one transaction that empties the ``public`` schema and replays the dump.

The ledger holds what a backup is (id, file, size, when, for which release); the files hold
the data. A restore loses every write made since its backup: callers say so, with its age.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor import oneoff
from conveyor.config import Service
from conveyor.errors import MigrationFailed
from conveyor.hosts import service_env

MOUNT = "/backups"
ROOT_USER = "0"  # a fresh volume belongs to root; the image's user could not write to it

# $1 the database file, $2 the backup file. Prints the copy's size, or "missing".
_SQLITE_BACKUP = """
import os, sqlite3, sys
source, target = sys.argv[1], sys.argv[2]
if not os.path.exists(source):
    print("missing"); sys.exit(0)
src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
dst = sqlite3.connect(target + ".part")
with dst:
    src.backup(dst)
dst.close(); src.close()
os.replace(target + ".part", target)
print(os.path.getsize(target))
"""

# $1 the backup file, $2 the database file: the backup API the other way, in place, so the
# file keeps its owner and the service's open connections see the restored data.
_SQLITE_RESTORE = """
import sqlite3, sys
src = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
dst = sqlite3.connect(sys.argv[2], timeout=30)
with dst:
    src.backup(dst)
print("restored")
"""

# The URL comes from the variable the config names ($URL_VARIABLE), or its _FILE (a file
# secret, written after start); psycopg's driver name means nothing to libpq.
_PG_URL = r"""
set -eu
eval "url=\${$URL_VARIABLE:-}"
eval "file=\${${URL_VARIABLE}_FILE:-}"
if [ -n "$file" ]; then
  i=0; while [ ! -s "$file" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done
  url="$(cat "$file")"
fi
url="$(printf '%s' "$url" | sed -e 's/^postgresql+psycopg:/postgresql:/' \
  -e 's/^postgres:/postgresql:/')"
"""
_PG_BACKUP = (
    _PG_URL
    + r"""pg_dump --format=custom --no-owner --file="$1.part" --dbname="$url"
mv -f "$1.part" "$1"
wc -c < "$1"
"""
)
# One transaction: the schema emptied, then the dump replayed — all of it, or none. (A plain
# ``pg_restore --clean`` keeps what was created after the backup, e.g. a newer revision's table.)
_PG_RESTORE = (
    _PG_URL
    + r"""{ echo "DROP SCHEMA public CASCADE; CREATE SCHEMA public;"
  pg_restore --no-owner --no-privileges --file=- "$1"; } \
  | psql --no-psqlrc --quiet --single-transaction --set=ON_ERROR_STOP=1 --dbname="$url" >/dev/null
echo restored
"""
)


@dataclass(frozen=True)
class Backup:
    id: str
    service: str
    kind: str
    file: str
    bytes: int
    taken: float
    release: str
    # The schema revision the database was at when the backup was taken.
    revision: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Backup:
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})

    def age(self, now: float | None = None) -> str:
        seconds = max(0.0, (now or time.time()) - self.taken)
        if seconds < 120:
            return f"{seconds:.0f} s"
        if seconds < 7200:
            return f"{seconds / 60:.0f} min"
        if seconds < 172800:
            return f"{seconds / 3600:.1f} h"
        return f"{seconds / 86400:.1f} days"


def volume(env_name: str) -> str:
    return f"conveyor-{env_name}-backups"


@dataclass(frozen=True)
class Site:
    """Where backups are taken: the primary host's engine, the environment, the log folder."""

    client: Any
    env_name: str
    log_dir: Path | None = None


def take(
    site: Site, service: Service, image: str, *, release: str, revision: str | None = None
) -> Backup | None:
    """Back the service's database up; None when there is no database yet (a first deploy)."""
    settings = service.migrations
    if settings is None or settings.backup_kind == "none":
        return None
    backup_id = f"{release}-{service.name}"
    suffix = "sqlite" if settings.backup_kind == "sqlite" else "dump"
    file = f"{MOUNT}/{backup_id}.{suffix}"
    finished = _run(site, service, image, action="backup", release=release, file=file)
    answer = finished.stdout.strip().splitlines()[-1:] or [""]
    if answer[0] == "missing":
        return None
    try:
        size = int(answer[0])
    except ValueError:
        raise MigrationFailed(
            f"{service.name}: the backup said {answer[0][:80]!r} instead of its size",
            finished.tail(),
        ) from None
    return Backup(
        id=backup_id,
        service=service.name,
        kind=settings.backup_kind,
        file=file,
        bytes=size,
        taken=time.time(),
        release=release,
        revision=revision,
    )


def restore(site: Site, service: Service, image: str, backup: Backup, *, release: str) -> None:
    """Put ``backup`` back into the service's database (writes since it was taken are lost)."""
    _run(site, service, image, action="restore", release=release, file=backup.file)


def remove(client: Any, env_name: str, files: list[str], image: str) -> None:
    """Delete backup files that no kept release needs any more."""
    if not files:
        return
    client.containers.run(
        image,
        ["rm", "-f", *files],
        remove=True,  # the router image declares no VOLUME, so nothing anonymous is left
        network_mode="none",
        user=ROOT_USER,
        volumes={volume(env_name): {"bind": MOUNT, "mode": "rw"}},
        labels={"conveyor.env": env_name, "conveyor.role": "oneoff"},
    )


def _run(
    site: Site, service: Service, image: str, *, action: str, release: str, file: str
) -> oneoff.Finished:
    settings = service.migrations
    if settings is None:
        raise MigrationFailed(f"{service.name} declares no migrations, so no backups")
    env = service_env(service)
    if settings.backup_kind == "sqlite":
        script = _SQLITE_BACKUP if action == "backup" else _SQLITE_RESTORE
        args = (
            [settings.backup_target, file] if action == "backup" else [file, settings.backup_target]
        )
        command = ["python3", "-c", script, *args]
        run_image = image
    else:
        script = _PG_BACKUP if action == "backup" else _PG_RESTORE
        command = ["sh", "-c", script, "sh", file]
        env["URL_VARIABLE"] = settings.backup_target
        run_image = settings.backup_image
    job = oneoff.OneOff(
        purpose=action,
        release=release,
        image=run_image,
        command=command,
        env=env,
        volumes={**service.volumes, volume(site.env_name): MOUNT},
        timeout=settings.timeout,
        user=ROOT_USER,
    )
    finished = oneoff.run(site.client, site.env_name, service, job, log_dir=site.log_dir)
    if not finished.ok:
        raise MigrationFailed(
            f"{service.name}: {action} failed: {finished.last_line()}", finished.tail()
        )
    return finished
