"""The workspace: one folder with an embedded SQLite catalog of models, artifacts, images, services.

Every step of the walk reads and writes here, so a kernel restart or a crash loses nothing
and ``list`` shows the truth. Three rules keep it honest:

* **Files first, row last.** New files are written into ``tmp/<pid>-<random>/``, then moved
  into place with ``os.rename`` *inside* the SQLite write transaction that adds the row, and
  the row is committed last. A crash before the commit leaves either a temp folder (swept when
  its process is gone) or an orphan folder with no row (swept under the write lock on open);
  never a row that points at nothing.
* **One writer at a time.** Writes use ``BEGIN IMMEDIATE`` with a busy timeout and WAL, so two
  kernels registering at once get versions 1, 2, 3... with no clash.
* **Dependency order.** A model cannot go while an image or service uses one of its
  artifacts; an image cannot go while a service uses it (service -> image -> model).

The workspace is private to its owner: its folders are 0700 and the files it writes 0600
(``catalog.db`` and its WAL included), and the catalog keeps no usable API key, only a
salted hash; the key itself is in ``services/<name>/keys`` (see :mod:`engine.keys`).
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import re
import secrets
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from accel_widgets.engine.store.keys import hash_key
from accel_widgets.engine.store.private_files import (
    DIR_MODE,
    FILE_MODE,
    make_private,
    private_dir,
    write_private,
)
from accel_widgets.engine.store.records import (
    NAME_RE,
    ArtifactRecord,
    ImageRecord,
    ModelRecord,
    ServiceRecord,
    check_name,
    default_order,
)
from accel_widgets.errors import (
    DependencyError,
    DiskSpaceError,
    NotFoundError,
    WorkspaceError,
)

#: The records and the private-file helpers live in their own modules (records.py,
#: private_files.py); every step has imported them from here, so they stay importable here.
__all__ = [
    "NAME_RE",
    "ArtifactRecord",
    "ImageRecord",
    "ModelRecord",
    "ServiceRecord",
    "Workspace",
    "check_name",
    "default_order",
    "default_root",
    "make_private",
    "private_dir",
    "write_private",
]

SCHEMA_VERSION = 2
#: How to bring a catalog written by an older accel-widgets up to :data:`SCHEMA_VERSION`:
#: the step that upgrades version ``n - 1`` to ``n``, by ``n``: SQL, or a function of the
#: workspace and the open write transaction (for a step that also writes files). Change the
#: schema by raising SCHEMA_VERSION, adding its step here, and updating ``_SCHEMA`` (which
#: new catalogs get). Defined below :class:`Workspace`.
MIGRATIONS: dict[int, str | Callable[[Workspace, sqlite3.Connection], None]] = {}
#: A service's usable API key, one line, beside its other files (``services/<name>/``).
KEY_FILE = "keys"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS versions (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    last INTEGER NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS models (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    kind TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '{}',
    spec TEXT NOT NULL DEFAULT '{}',
    path TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (name, version)
);
CREATE TABLE IF NOT EXISTS artifacts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model_id INTEGER NOT NULL REFERENCES models(id),
    precision TEXT NOT NULL,
    format TEXT NOT NULL DEFAULT 'onnx',
    path TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    report TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    UNIQUE (model_id, precision)
);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    artifact_id INTEGER NOT NULL REFERENCES artifacts(id),
    path TEXT NOT NULL,
    info TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    UNIQUE (name, version)
);
CREATE TABLE IF NOT EXISTS services (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    artifact_id INTEGER NOT NULL REFERENCES artifacts(id),
    image_id INTEGER REFERENCES images(id),
    target TEXT NOT NULL,
    address TEXT NOT NULL DEFAULT '',
    port INTEGER,
    pid INTEGER,
    key_hash TEXT,
    state TEXT NOT NULL,
    log_path TEXT,
    info TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
"""


def default_root() -> Path:
    """``$ACCEL_WIDGETS_WORKSPACE``, else the user's data folder (XDG on Linux)."""
    env = os.environ.get("ACCEL_WIDGETS_WORKSPACE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "accel-widgets" / "workspace"


def _readable_id(user: str) -> str:
    """``alice-3f9a2c1b``: who made the workspace, and 8 random hex digits to tell two apart.

    It names the workspace's Docker objects (image tags, container names), which allow
    lowercase letters, digits and ``-`` only.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", user.lower()).strip("-")[:20] or "user"
    return f"{slug}-{secrets.token_hex(4)}"


def _same_id(root: str, ident: str) -> bool:
    """Whether the catalog in ``root`` (another folder) carries the workspace id ``ident``."""
    catalog = Path(root) / "catalog.db"
    if not catalog.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{catalog}?mode=ro", uri=True)) as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'workspace_id'").fetchone()
    except sqlite3.Error:
        return False
    return row is not None and row[0] == ident


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Workspace:
    """A workspace folder: ``catalog.db`` plus ``models/``, ``images/``, ``services/``, ``tmp/``.

    Parameters
    ----------
    root:
        The folder; created when missing. Defaults to :func:`default_root`.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_root()
        try:
            private_dir(self.root)
            for sub in ("models", "images", "services", "tmp"):
                private_dir(self.root / sub)
        except OSError as exc:
            raise WorkspaceError(
                f"cannot create the workspace folder {self.root}: {exc.strerror}. "
                "Choose a writable folder (Workspace(root=...) or $ACCEL_WIDGETS_WORKSPACE)."
            ) from exc
        self.db_path = self.root / "catalog.db"
        if not self.db_path.exists():
            # Created 0600 before SQLite opens it: SQLite gives its WAL and shared-memory
            # files the database file's mode.
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.db_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        with self._connect() as db:
            db.executescript(_SCHEMA)
            db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
        for suffix in ("", "-wal", "-shm"):  # a catalog made by an older version: 0644
            make_private(self.db_path.with_name(self.db_path.name + suffix))
        self._migrate()
        self.ident = self._identity()
        self.recover()

    def _identity(self) -> str:
        """The workspace's readable id (``alice-3f9a2c1b``), made once and kept in the catalog.

        Docker image tags and container names carry it, so two workspaces on one engine
        (two users of a workshop box, two test runs) never share an object by name. It is
        kept in the catalog rather than derived from the path, so a moved workspace keeps
        its objects; a copy (the folder it was made in still holds a catalog with the same
        id) gets an id of its own.
        """
        here = str(self.root.resolve())
        with self._connect() as db:
            rows = dict(
                db.execute(
                    "SELECT key, value FROM meta WHERE key IN ('workspace_id', 'workspace_root')"
                ).fetchall()
            )
        ident, made_in = rows.get("workspace_id"), rows.get("workspace_root")
        if ident is not None and (made_in in (None, here) or not _same_id(made_in, ident)):
            if made_in != here:  # moved (or written before the root was recorded)
                self._set_meta({"workspace_root": here})
            return ident
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry for this uid (some containers)
            user = f"uid{os.geteuid()}"
        ident = _readable_id(user)
        self._set_meta({"workspace_id": ident, "workspace_root": here})
        return ident

    def _set_meta(self, values: Mapping[str, str]) -> None:
        with self._write() as db:
            for key, value in values.items():
                db.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )

    def _migrate(self) -> None:
        """Read ``schema_version``; upgrade an older catalog, refuse a newer one.

        A newer catalog (written by a later accel-widgets) is refused rather than used: this
        version would misread or damage what it does not know. Each upgrade step runs in the
        same write transaction as the version bump, so a crash leaves the old version intact.
        """
        with self._connect() as db:
            if self._schema_version(db) == SCHEMA_VERSION:
                return  # the usual case: no write lock taken
        with self._write() as db:
            # What a step deletes is overwritten, not only unlinked (plain API keys, v2).
            db.execute("PRAGMA secure_delete=ON")
            found = self._schema_version(db)
            for version in range(found + 1, SCHEMA_VERSION + 1):
                if version not in MIGRATIONS:
                    raise WorkspaceError(
                        f"no upgrade from catalog schema {version - 1} to {version} for "
                        f"{self.db_path}; this accel-widgets cannot open it"
                    )
                step = MIGRATIONS[version]
                if callable(step):
                    step(self, db)
                else:
                    for statement in step.split(";"):
                        if statement.strip():
                            db.execute(statement)
                db.execute(
                    "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),)
                )
        # Rewrite the file and empty the WAL: no page of the old catalog is left in either.
        with self._connect() as db:
            db.execute("VACUUM")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _schema_version(self, db: sqlite3.Connection) -> int:
        """The catalog's ``schema_version``; a newer or unreadable one is refused."""
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        text = row["value"] if row else str(SCHEMA_VERSION)
        if not text.isdigit():
            raise WorkspaceError(
                f"the workspace catalog {self.db_path} has schema_version {text!r}, not a "
                "number; it was not written by accel-widgets, or is damaged"
            )
        found = int(text)
        if found > SCHEMA_VERSION:
            raise WorkspaceError(
                f"the workspace {self.root} was written by a newer accel-widgets (catalog "
                f"schema {found}; this one knows up to {SCHEMA_VERSION}). Upgrade "
                "(pip install -U accel-widgets) or use another workspace "
                "($ACCEL_WIDGETS_WORKSPACE)."
            )
        return found

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    # -- connections and transactions -------------------------------------------------

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None)
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=30000")
            db.execute("PRAGMA foreign_keys=ON")
            yield db
        finally:
            db.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction holding SQLite's write lock from the start (BEGIN IMMEDIATE)."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            else:
                db.execute("COMMIT")

    # -- staging and recovery --------------------------------------------------------

    @contextlib.contextmanager
    def staging(self, min_free_bytes: int = 0) -> Iterator[Path]:
        """A private temp folder to write files into before they are registered.

        The folder is removed on exit unless a ``register_*``/``add_*`` call moved it into
        place, so an exception (or a cancel) mid-write leaves nothing behind.
        """
        self.check_disk(min_free_bytes)
        path = self.root / "tmp" / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        path.mkdir(mode=DIR_MODE, parents=True)
        try:
            yield path
        finally:
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)

    def check_disk(self, needed_bytes: int) -> None:
        """Raise :class:`DiskSpaceError` before a write that cannot fit."""
        if needed_bytes <= 0:
            return
        free = shutil.disk_usage(self.root).free
        if free < needed_bytes:
            raise DiskSpaceError(
                f"not enough disk space in {self.root}: {needed_bytes / 2**20:,.0f} MiB needed, "
                f"{free / 2**20:,.0f} MiB free. Delete old models (`accel-widgets delete model "
                "NAME`) or point the workspace at a bigger disk."
            )

    def recover(self) -> list[Path]:
        """Sweep what a crashed writer left: temp folders of dead processes, folders with no row.

        Runs under the write lock so it never races a writer that is between its rename and
        its commit.
        """
        removed: list[Path] = []
        for tmp in (self.root / "tmp").iterdir():
            pid_text = tmp.name.split("-", 1)[0]
            if pid_text.isdigit() and not _pid_alive(int(pid_text)):
                shutil.rmtree(tmp, ignore_errors=True)
                removed.append(tmp)
        with self._write() as db:
            known = {row["path"] for row in db.execute("SELECT path FROM models")}
            known |= {row["path"] for row in db.execute("SELECT path FROM artifacts")}
            known |= {row["path"] for row in db.execute("SELECT path FROM images")}
            for folder in self._entry_folders():
                rel = folder.relative_to(self.root).as_posix()
                if rel not in known and not any(k.startswith(rel + "/") for k in known):
                    shutil.rmtree(folder, ignore_errors=True)
                    removed.append(folder)
        return removed

    def _entry_folders(self) -> Iterator[Path]:
        """Folders that a row should own: models/<n>/<v>, .../artifacts/<p>, images/<n>/<v>."""
        for kind in ("models", "images"):
            for name_dir in (self.root / kind).iterdir():
                if not name_dir.is_dir():
                    continue
                for version_dir in name_dir.iterdir():
                    yield version_dir
                    artifacts = version_dir / "artifacts"
                    if kind == "models" and artifacts.is_dir():
                        yield from artifacts.iterdir()

    @staticmethod
    def _next_version(db: sqlite3.Connection, kind: str, name: str) -> int:
        """One more than any version ``name`` ever had: a deleted version is never reused,
        so ``resnet50:3`` always means the same model (as versions did in Azure ML)."""
        row = db.execute(
            f"SELECT MAX(COALESCE((SELECT last FROM versions WHERE kind = ? AND name = ?), 0), "
            f"COALESCE((SELECT MAX(version) FROM {kind} WHERE name = ?), 0)) AS v",
            (kind, name, name),
        ).fetchone()
        version = int(row["v"]) + 1
        db.execute(
            "INSERT INTO versions (kind, name, last) VALUES (?, ?, ?) "
            "ON CONFLICT (kind, name) DO UPDATE SET last = excluded.last",
            (kind, name, version),
        )
        return version

    def _place(self, staged: Path, rel: str) -> None:
        target = self.root / rel
        private_dir(target.parent)
        if target.exists():  # left by a crash between rename and commit: no row owns it
            shutil.rmtree(target)
        os.rename(staged, target)
        make_private(target)

    # -- models ------------------------------------------------------------------------

    def register_model(
        self,
        name: str,
        staged: str | os.PathLike[str],
        *,
        kind: str,
        description: str = "",
        tags: Mapping[str, str] | None = None,
        spec: Mapping[str, Any] | None = None,
    ) -> ModelRecord:
        """Register the files in ``staged`` (from :meth:`staging`) as the next version of ``name``.

        Returns
        -------
        ModelRecord
            With ``version`` one more than the highest this name has had (1 for a new name).
        """
        check_name(name)
        staged = Path(staged)
        if not staged.is_dir():
            raise WorkspaceError(f"nothing staged at {staged}: write the model files first")
        with self._write() as db:
            version = self._next_version(db, "models", name)
            rel = f"models/{name}/{version}"
            db.execute(
                "INSERT INTO models (name, version, kind, description, tags, spec, path, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    version,
                    kind,
                    description,
                    json.dumps(dict(tags or {})),
                    json.dumps(dict(spec or {})),
                    rel,
                    time.time(),
                ),
            )
            self._place(staged, rel)
        return self.get_model(name, version)

    def _model_from_row(self, row: sqlite3.Row) -> ModelRecord:
        spec = json.loads(row["spec"])
        if spec.get("labels_file"):
            # A label file kept inside the model's own folder (a trained model's class
            # names): its path is known only once the row is placed, and follows the
            # workspace if it moves. Every reader of spec["labels"] gets a plain path.
            spec["labels"] = str(self.root / row["path"] / spec["labels_file"])
        return ModelRecord(
            id=row["id"],
            name=row["name"],
            version=row["version"],
            kind=row["kind"],
            description=row["description"],
            tags=json.loads(row["tags"]),
            spec=spec,
            path=self.root / row["path"],
            created_at=row["created_at"],
        )

    def get_model(self, name: str, version: int | None = None) -> ModelRecord:
        """A model version; the latest when ``version`` is None."""
        with self._connect() as db:
            if version is None:
                row = db.execute(
                    "SELECT * FROM models WHERE name = ? ORDER BY version DESC LIMIT 1", (name,)
                ).fetchone()
            else:
                row = db.execute(
                    "SELECT * FROM models WHERE name = ? AND version = ?", (name, int(version))
                ).fetchone()
            if row is None:
                names = [r["name"] for r in db.execute("SELECT DISTINCT name FROM models")]
                if version is not None and name in names:
                    versions = [
                        r["version"]
                        for r in db.execute(
                            "SELECT version FROM models WHERE name = ? ORDER BY version", (name,)
                        )
                    ]
                    raise NotFoundError(
                        f"model {name!r} has no version {version}; versions: "
                        f"{', '.join(map(str, versions))}"
                    )
                listing = ", ".join(sorted(names)) or "none yet"
                raise NotFoundError(
                    f"no model {name!r} in the workspace {self.root}; models: {listing}. "
                    "Register one first (`accel-widgets convert ...` or register_model)."
                )
            return self._model_from_row(row)

    def latest_model(self, name: str) -> ModelRecord:
        return self.get_model(name, None)

    def find_model(self, name: str) -> ModelRecord | None:
        """The latest version of ``name``, or None: for callers that decide what to do next."""
        try:
            return self.get_model(name)
        except NotFoundError:
            return None

    def list_models(self, name: str | None = None) -> list[ModelRecord]:
        with self._connect() as db:
            if name is None:
                rows = db.execute("SELECT * FROM models ORDER BY name, version").fetchall()
            else:
                rows = db.execute(
                    "SELECT * FROM models WHERE name = ? ORDER BY version", (name,)
                ).fetchall()
        return [self._model_from_row(r) for r in rows]

    def update_model_tags(self, model: ModelRecord, tags: Mapping[str, str]) -> ModelRecord:
        with self._write() as db:
            db.execute(
                "UPDATE models SET tags = ? WHERE id = ?", (json.dumps(dict(tags)), model.id)
            )
        return self.get_model(model.name, model.version)

    def delete_model(self, name: str, version: int | None = None) -> list[ModelRecord]:
        """Delete one version (or all versions when ``version`` is None) and their artifacts.

        Raises
        ------
        DependencyError
            When an image or a service still uses one of the model's artifacts: delete those
            first (service, then image, then model).
        """
        targets = self.list_models(name) if version is None else [self.get_model(name, version)]
        if not targets:
            self.get_model(name)  # raises the helpful NotFoundError
        with self._write() as db:
            for model in targets:
                users = db.execute(
                    "SELECT 'service' AS kind, s.name AS name FROM services s "
                    "JOIN artifacts a ON s.artifact_id = a.id WHERE a.model_id = ? "
                    "UNION ALL SELECT 'image', i.name || ':' || i.version FROM images i "
                    "JOIN artifacts a ON i.artifact_id = a.id WHERE a.model_id = ?",
                    (model.id, model.id),
                ).fetchall()
                if users:
                    listing = ", ".join(f"{u['kind']} {u['name']}" for u in users)
                    raise DependencyError(
                        f"model {model.ref} is still used by {listing}; delete those first "
                        "(services, then images, then the model)"
                    )
            for model in targets:
                db.execute("DELETE FROM artifacts WHERE model_id = ?", (model.id,))
                db.execute("DELETE FROM models WHERE id = ?", (model.id,))
            # Files go last, still under the lock: a failed delete above leaves them intact.
            for model in targets:
                shutil.rmtree(model.path, ignore_errors=True)
            for model in targets:
                with contextlib.suppress(OSError):
                    model.path.parent.rmdir()  # only when no version is left
        return targets

    # -- artifacts ---------------------------------------------------------------------

    def add_artifact(
        self,
        model: ModelRecord,
        staged: str | os.PathLike[str],
        *,
        precision: str,
        report: Mapping[str, Any] | None = None,
        format: str = "onnx",
    ) -> ArtifactRecord:
        """Register a converted model (a staged folder holding ``model.onnx``) for ``model``.

        A second artifact of the same precision replaces the first, unless something uses it.
        """
        staged = Path(staged)
        if not (staged / "model.onnx").is_file():
            raise WorkspaceError(f"no model.onnx in {staged}: convert the model first")
        size = sum(p.stat().st_size for p in staged.rglob("*") if p.is_file())
        rel = f"models/{model.name}/{model.version}/artifacts/{precision}"
        with self._write() as db:
            if db.execute("SELECT 1 FROM models WHERE id = ?", (model.id,)).fetchone() is None:
                raise NotFoundError(f"model {model.ref} was deleted meanwhile; register it again")
            old = db.execute(
                "SELECT id FROM artifacts WHERE model_id = ? AND precision = ?",
                (model.id, precision),
            ).fetchone()
            if old is not None:
                self._refuse_if_used(db, old["id"], f"the {precision} artifact of {model.ref}")
                db.execute("DELETE FROM artifacts WHERE id = ?", (old["id"],))
            db.execute(
                "INSERT INTO artifacts (model_id, precision, format, path, size_bytes, report, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    model.id,
                    precision,
                    format,
                    rel,
                    size,
                    json.dumps(dict(report or {})),
                    time.time(),
                ),
            )
            self._place(staged, rel)
        return self.get_artifact(model, precision=precision)

    def _refuse_if_used(self, db: sqlite3.Connection, artifact_id: int, what: str) -> None:
        users = db.execute(
            "SELECT 'service ' || name AS u FROM services WHERE artifact_id = ? UNION ALL "
            "SELECT 'image ' || name || ':' || version FROM images WHERE artifact_id = ?",
            (artifact_id, artifact_id),
        ).fetchall()
        if users:
            raise DependencyError(
                f"{what} is used by {', '.join(u['u'] for u in users)}; delete those first"
            )

    def _artifact_from_row(self, row: sqlite3.Row) -> ArtifactRecord:
        return ArtifactRecord(
            id=row["id"],
            model_id=row["model_id"],
            model_name=row["name"],
            model_version=row["version"],
            precision=row["precision"],
            format=row["format"],
            path=self.root / row["path"],
            size_bytes=row["size_bytes"],
            report=json.loads(row["report"]),
            created_at=row["created_at"],
        )

    _ARTIFACT_SELECT = (
        "SELECT a.*, m.name AS name, m.version AS version FROM artifacts a "
        "JOIN models m ON a.model_id = m.id"
    )

    def get_artifact(
        self,
        name: str | ModelRecord | ArtifactRecord,
        version: int | None = None,
        precision: str | None = None,
    ) -> ArtifactRecord:
        """The artifact of a model version: ``precision``, or when None the best artifact
        that passed its checks (:func:`default_order`).

        ``name`` may be the record a step before handed on: an :class:`ArtifactRecord` is
        read again by its id (so one deleted since is a NotFoundError, not a stale path), a
        :class:`ModelRecord` stands for its own name and version.
        """
        if isinstance(name, ArtifactRecord):
            try:
                return self.get_artifact_by_id(name.id)
            except NotFoundError:
                raise NotFoundError(
                    f"the {name.precision} artifact of {name.model_name}:{name.model_version} "
                    f"was deleted; convert it again (`accel-widgets convert {name.model_name}`)"
                ) from None
        if isinstance(name, ModelRecord):
            name, version = name.name, name.version
        model = self.get_model(name, version)
        artifacts = self.list_artifacts(model)
        if precision is not None:
            artifacts = [a for a in artifacts if a.precision == precision]
        if not artifacts:
            have = ", ".join(a.precision for a in self.list_artifacts(model)) or "none"
            wanted = f"{precision} artifact" if precision else "converted artifact"
            raise NotFoundError(
                f"model {model.ref} has no {wanted} (it has: {have}); convert it first "
                f"(`accel-widgets convert {name}`)"
            )
        return sorted(artifacts, key=default_order)[0]

    def get_artifact_by_id(self, artifact_id: int) -> ArtifactRecord:
        with self._connect() as db:
            row = db.execute(self._ARTIFACT_SELECT + " WHERE a.id = ?", (artifact_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no artifact with id {artifact_id}")
        return self._artifact_from_row(row)

    def list_artifacts(self, model: ModelRecord | None = None) -> list[ArtifactRecord]:
        with self._connect() as db:
            if model is None:
                rows = db.execute(self._ARTIFACT_SELECT + " ORDER BY m.name, m.version").fetchall()
            else:
                rows = db.execute(
                    self._ARTIFACT_SELECT + " WHERE a.model_id = ? ORDER BY a.precision",
                    (model.id,),
                ).fetchall()
        return [self._artifact_from_row(r) for r in rows]

    # -- images ------------------------------------------------------------------------

    def register_image(
        self,
        name: str,
        artifact: ArtifactRecord,
        staged: str | os.PathLike[str],
        info: Mapping[str, Any] | None = None,
    ) -> ImageRecord:
        """Register a packaged image (its build context in ``staged``) for one artifact."""
        check_name(name, "image")
        with self._write() as db:
            if (
                db.execute("SELECT 1 FROM artifacts WHERE id = ?", (artifact.id,)).fetchone()
                is None
            ):
                raise NotFoundError(f"artifact {artifact.id} was deleted; convert the model again")
            version = self._next_version(db, "images", name)
            rel = f"images/{name}/{version}"
            db.execute(
                "INSERT INTO images (name, version, artifact_id, path, info, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (name, version, artifact.id, rel, json.dumps(dict(info or {})), time.time()),
            )
            self._place(Path(staged), rel)
        return self.get_image(name, version)

    def _image_from_row(self, row: sqlite3.Row) -> ImageRecord:
        return ImageRecord(
            id=row["id"],
            name=row["name"],
            version=row["version"],
            artifact_id=row["artifact_id"],
            path=self.root / row["path"],
            info=json.loads(row["info"]),
            created_at=row["created_at"],
        )

    def get_image(self, name: str, version: int | None = None) -> ImageRecord:
        with self._connect() as db:
            if version is None:
                row = db.execute(
                    "SELECT * FROM images WHERE name = ? ORDER BY version DESC LIMIT 1", (name,)
                ).fetchone()
            else:
                row = db.execute(
                    "SELECT * FROM images WHERE name = ? AND version = ?", (name, version)
                ).fetchone()
            if row is None:
                refs = [
                    f"{r['name']}:{r['version']}"
                    for r in db.execute("SELECT name, version FROM images ORDER BY name, version")
                ]
                wanted = f"{name}:{version}" if version is not None else name
                raise NotFoundError(f"no image {wanted!r}; images: {', '.join(refs) or 'none yet'}")
        return self._image_from_row(row)

    def list_images(self) -> list[ImageRecord]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM images ORDER BY name, version").fetchall()
        return [self._image_from_row(r) for r in rows]

    def update_image(self, image: ImageRecord, info: Mapping[str, Any]) -> ImageRecord:
        """Replace an image's info (a push or a save is recorded this way)."""
        with self._write() as db:
            cur = db.execute(
                "UPDATE images SET info = ? WHERE id = ?", (json.dumps(dict(info)), image.id)
            )
            if cur.rowcount == 0:
                raise NotFoundError(
                    f"image {image.name}:{image.version} was deleted meanwhile; package again"
                )
        return self.get_image(image.name, image.version)

    def image_users(self, image: ImageRecord) -> list[str]:
        """Names of the services that run ``image`` (they must go before it)."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT name FROM services WHERE image_id = ? ORDER BY name", (image.id,)
            ).fetchall()
        return [r["name"] for r in rows]

    def delete_image(self, name: str, version: int | None = None) -> list[ImageRecord]:
        targets = (
            [self.get_image(name, version)]
            if version is not None
            else [i for i in self.list_images() if i.name == name]
        )
        if not targets:
            self.get_image(name)
        with self._write() as db:
            for image in targets:
                users = db.execute(
                    "SELECT name FROM services WHERE image_id = ?", (image.id,)
                ).fetchall()
                if users:
                    raise DependencyError(
                        f"image {image.name}:{image.version} is used by service "
                        f"{', '.join(u['name'] for u in users)}; delete the service first"
                    )
            for image in targets:
                db.execute("DELETE FROM images WHERE id = ?", (image.id,))
            for image in targets:
                shutil.rmtree(image.path, ignore_errors=True)
                with contextlib.suppress(OSError):
                    image.path.parent.rmdir()  # only when no version is left
        return targets

    # -- services ----------------------------------------------------------------------

    def add_service(
        self,
        name: str,
        artifact: ArtifactRecord,
        *,
        target: str,
        state: str,
        image: ImageRecord | None = None,
        address: str = "",
        port: int | None = None,
        pid: int | None = None,
        key: str | None = None,
        log_path: str | os.PathLike[str] | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> ServiceRecord:
        """Record a service; its name must be free (delete the old service first).

        ``key`` goes to the service's key file (0600); the catalog keeps its salted hash.
        """
        check_name(name, "service")
        now = time.time()
        staged_key = self._stage_key(name, key) if key else None
        try:
            with self._write() as db:
                if (
                    db.execute("SELECT 1 FROM artifacts WHERE id = ?", (artifact.id,)).fetchone()
                    is None
                ):
                    raise NotFoundError(
                        f"the {artifact.precision} artifact of {artifact.model_name}:"
                        f"{artifact.model_version} was deleted meanwhile; convert the model again"
                    )
                if db.execute("SELECT 1 FROM services WHERE name = ?", (name,)).fetchone():
                    raise WorkspaceError(
                        f"a service named {name!r} already exists; delete it first "
                        f"(`accel-widgets delete service {name}`) or choose another name"
                    )
                db.execute(
                    "INSERT INTO services (name, artifact_id, image_id, target, address, port, "
                    "pid, key_hash, state, log_path, info, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        name,
                        artifact.id,
                        image.id if image else None,
                        target,
                        address,
                        port,
                        pid,
                        hash_key(key) if key else None,
                        state,
                        str(log_path) if log_path else None,
                        json.dumps(dict(info or {})),
                        now,
                        now,
                    ),
                )
                if staged_key is not None:  # the name is ours now: the key file may go in
                    os.replace(staged_key, self.key_file(name))
                    staged_key = None
        finally:
            if staged_key is not None:
                with contextlib.suppress(OSError):
                    staged_key.unlink()
        return self.get_service(name)

    def service_folder(self, name: str) -> Path:
        """``services/<name>/``: the service's key file and, for the local target, its runs."""
        return self.root / "services" / name

    def key_file(self, name: str) -> Path:
        """Where service ``name``'s usable API key is kept (mode 0600; see engine.keys)."""
        return self.service_folder(name) / KEY_FILE

    def _stage_key(self, name: str, key: str) -> Path:
        """The key in a 0600 temp file beside its final place, for a rename under the lock."""
        folder = private_dir(self.service_folder(name))
        tmp = folder / f".{KEY_FILE}.{os.getpid()}-{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(key + "\n")
        return tmp

    def _read_key(self, name: str) -> str | None:
        try:
            text = self.key_file(name).read_text(encoding="utf-8")
        except OSError:  # gone, or not this user's to read
            return None
        return next((line.strip() for line in text.splitlines() if line.strip()), None)

    def update_service(self, name: str, **changes: Any) -> ServiceRecord:
        """Change some fields of a service record (state, pid, port, address, info, key...).

        ``key=None`` takes the key away (no auth); a new key replaces the key file.
        """
        allowed = {"address", "port", "pid", "key", "state", "log_path", "info", "image_id"}
        allowed |= {"artifact_id"}  # a new version swapped in (targets.deploy)
        unknown = set(changes) - allowed
        if unknown:
            raise WorkspaceError(f"cannot change {sorted(unknown)}; allowed: {sorted(allowed)}")
        if "info" in changes:
            changes["info"] = json.dumps(dict(changes["info"]))
        if changes.get("log_path") is not None:
            changes["log_path"] = str(changes["log_path"])
        staged_key = None
        if "key" in changes:
            key = changes.pop("key")
            if key and key == self._read_key(name):
                pass  # the same key: keep its file and its hash
            else:
                changes["key_hash"] = hash_key(key) if key else None
                staged_key = self._stage_key(name, key) if key else None
        sets = "".join(f"{k} = ?, " for k in changes)
        try:
            with self._write() as db:
                cur = db.execute(
                    f"UPDATE services SET {sets}updated_at = ? WHERE name = ?",
                    (*changes.values(), time.time(), name),
                )
                if cur.rowcount == 0:
                    names = [
                        r["name"] for r in db.execute("SELECT name FROM services ORDER BY name")
                    ]
                    raise NotFoundError(
                        f"no service {name!r}; services: {', '.join(names) or 'none running'}"
                    )
                if staged_key is not None:
                    os.replace(staged_key, self.key_file(name))
                    staged_key = None
                elif "key_hash" in changes and changes["key_hash"] is None:
                    with contextlib.suppress(FileNotFoundError):
                        self.key_file(name).unlink()
        finally:
            if staged_key is not None:
                with contextlib.suppress(OSError):
                    staged_key.unlink()
        return self.get_service(name)

    def _service_from_row(self, row: sqlite3.Row) -> ServiceRecord:
        return ServiceRecord(
            id=row["id"],
            name=row["name"],
            artifact_id=row["artifact_id"],
            image_id=row["image_id"],
            target=row["target"],
            address=row["address"],
            port=row["port"],
            pid=row["pid"],
            key=self._read_key(row["name"]) if row["key_hash"] else None,
            state=row["state"],
            log_path=Path(row["log_path"]) if row["log_path"] else None,
            info=json.loads(row["info"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            key_hash=row["key_hash"],
        )

    def get_service(self, name: str) -> ServiceRecord:
        with self._connect() as db:
            row = db.execute("SELECT * FROM services WHERE name = ?", (name,)).fetchone()
            if row is None:
                names = [r["name"] for r in db.execute("SELECT name FROM services ORDER BY name")]
                raise NotFoundError(
                    f"no service {name!r}; services: {', '.join(names) or 'none running'}"
                )
        return self._service_from_row(row)

    def list_services(self) -> list[ServiceRecord]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM services ORDER BY name").fetchall()
        return [self._service_from_row(r) for r in rows]

    def find_service(self, name: str) -> ServiceRecord | None:
        """Service ``name`` as recorded, or None."""
        try:
            return self.get_service(name)
        except NotFoundError:
            return None

    def remove_service(self, name: str) -> ServiceRecord:
        """Drop a service's row and its key file (the target stops the process first)."""
        service = self.get_service(name)
        with self._write() as db:
            db.execute("DELETE FROM services WHERE id = ?", (service.id,))
        with contextlib.suppress(FileNotFoundError):
            self.key_file(name).unlink()
        with contextlib.suppress(OSError):
            self.service_folder(name).rmdir()  # only when nothing else is in it
        return service

    # -- one deploy of a name at a time ---------------------------------------------------

    @contextlib.contextmanager
    def service_lock(self, name: str, *, wait: bool = False) -> Iterator[bool]:
        """Hold service ``name``'s deploy lock; yields False when another process holds it.

        An advisory ``flock`` on ``locks/<name>.lock``: deploys and deletes of one name
        take turns, and the kernel drops the lock with its holder, so a deploy that was
        ``kill -9``-ed holds nothing. That is how a reader tells a deploy still under way
        (leave its record alone) from one that died midway (reconcile the record).
        """
        check_name(name, "service")
        path = private_dir(self.root / "locks") / f"{name}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def lock_holder(self, name: str) -> int | None:
        """The pid that last took service ``name``'s deploy lock (for messages)."""
        try:
            text = (self.root / "locks" / f"{name}.lock").read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None


def _migrate_keys_out(workspace: Workspace, db: sqlite3.Connection) -> None:
    """Schema 2: plain API keys leave the catalog for 0600 key files; the catalog keeps a
    salted hash. The old column is dropped (SQLite 3.35+) or emptied, and the migration's
    ``secure_delete`` and VACUUM leave no copy of a key in the file's free pages."""
    db.execute("ALTER TABLE services ADD COLUMN key_hash TEXT")
    rows = db.execute("SELECT name, key FROM services WHERE key IS NOT NULL AND key != ''")
    for row in rows.fetchall():
        write_private(workspace.key_file(row["name"]), row["key"] + "\n")
        db.execute(
            "UPDATE services SET key_hash = ? WHERE name = ?", (hash_key(row["key"]), row["name"])
        )
    db.execute("UPDATE services SET key = NULL")
    with contextlib.suppress(sqlite3.OperationalError):  # SQLite < 3.35: left empty
        db.execute("ALTER TABLE services DROP COLUMN key")


MIGRATIONS[2] = _migrate_keys_out
