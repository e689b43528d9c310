"""A new local SQLite store starts from a copy of an empty, migrated one.

MLflow builds a new SQLite store by running every schema migration since its first release: about
4 seconds on a 2-core machine, paid by every run, sweep and test that opens a fresh ``sqlite:///``
file. The result is the same file each time, so medlora builds it once per MLflow schema revision
(an empty store without experiments, in the user's cache folder, one per MLflow version) and copies it to each new store's
path. MLflow then opens the copy as an existing store at the current revision and creates its
``Default`` experiment with the new store's own artifact root, as it would have. Nothing leaves the
machine; a store that already exists is never touched, and any failure falls back to MLflow's own
creation.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

from ..cache import cache_dir

log = logging.getLogger(__name__)


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` URI; ``None`` for any other store or an in-memory database."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def _version() -> str:
    """The installed MLflow's version: its schema revision is fixed by it (reading the revision itself from
    the migration scripts costs about a second)."""
    from mlflow.version import VERSION

    return VERSION


def _build(target: Path) -> None:
    """An empty store at MLflow's latest revision at ``target``: migrated, then its experiments removed
    (the ``Default`` experiment records its artifact root, which belongs to each store)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(f"sqlite:///{target}", tempfile.gettempdir())
    store.engine.dispose()
    with sqlite3.connect(target) as db:
        db.execute("DELETE FROM experiment_tags")
        db.execute("DELETE FROM experiments")
    db.close()


def template() -> Path:
    """The cached empty store of the installed MLflow version, built on first use."""
    path = cache_dir() / f"mlflow-empty-{_version()}.db"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".mlflow-empty-", suffix=".db", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        _build(Path(tmp))
        os.replace(tmp, path)  # atomic: a concurrent builder's copy is identical
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("built the empty MLflow store template %s (once per MLflow schema revision)", path)
    return path


def seed_sqlite_store(uri: str) -> bool:
    """Copy the empty-store template to the file of ``uri`` when that file does not exist yet; ``True``
    when it did. Any other store, an existing file or a failure (logged) leaves MLflow to do it."""
    path = sqlite_path(uri)
    if path is None or path.exists():
        return False
    try:
        source = template()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        shutil.copyfile(source, tmp)
        try:
            os.link(tmp, path)  # fails if another process created the store meanwhile: theirs is kept
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        return True
    except Exception as err:  # noqa: BLE001 - a speed-up only: MLflow creates the store itself
        log.debug("no MLflow store template for %s (%s): MLflow creates the schema", path, err)
        return False
