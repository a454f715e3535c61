"""Storage URLs: opening them (SQLite, PostgreSQL, MySQL, a gRPC proxy), masking their secrets,
and the study lock that lets many workers share one study.

Workers start at once against an empty database, so opening a storage retries what Optuna does
non-atomically (table creation, its version row). A study-level lock (`StudyLock`) serialises the
few decisions that must happen once per study (enqueueing the baselines, admitting a trial under
the total); it is built from the one atomic operation every Optuna storage has, creating a study
with a unique name, so it works the same through PostgreSQL, SQLite and the gRPC proxy.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import signal
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import optuna

from flexopt.errors import FlexoptError

RDB_SCHEMES = ("sqlite", "postgresql", "mysql")
LOCK_SUFFIX = ":flexopt-lock"  # name suffix of the short-lived studies that serve as locks
OPEN_RETRIES = 8


def mask_url(url: str) -> str:
    """`url` with its password replaced by `***` (for every message that prints a URL)."""
    return re.sub(r"(://[^/:@]*:)[^/@]*@", r"\1***@", str(url))


def _scheme(url: str) -> str:
    return url.split(":", 1)[0].split("+", 1)[0].lower()


def driver_url(url: str) -> str:
    """Plain `postgresql://` means psycopg 3 (flexopt[postgres]) whatever SQLAlchemy's default."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def storage_error(where: str, err: Exception) -> FlexoptError | None:
    """The one-line user error for a storage that cannot be opened (None: not such an error)."""
    shown = mask_url(where)
    missing = _missing_module(err)
    if missing is not None:
        extra = {"psycopg": "postgres", "grpc": "grpc"}.get(missing.split(".")[0])
        hint = (f"pip install 'flexopt[{extra}]'" if extra
                else f"install the package that provides {missing!r}")
        return FlexoptError(f"storage {shown!r} needs the missing Python module {missing!r}; "
                            f"allowed: {hint}")
    if type(err).__module__.startswith(("sqlalchemy", "optuna", "psycopg", "grpc")) or isinstance(
        err, ValueError | OSError | ConnectionError
    ):
        text = str(err).strip()
        first = text.splitlines()[0] if text else type(err).__name__
        password = urlsplit(where).password if "://" in where else None
        if password:
            first = first.replace(password, "***")
        return FlexoptError(f"storage {shown!r} cannot be opened: {mask_url(first)}")
    return None


def _missing_module(err: BaseException | None) -> str | None:
    """The module an ImportError (maybe wrapped by Optuna in another one) could not import."""
    while err is not None:
        if isinstance(err, ImportError) and err.name:
            return err.name
        err = err.__cause__ or err.__context__
    return None


def _is_race(err: Exception) -> bool:
    """Errors two workers creating the same tables (or version row) at once can get."""
    name = type(err).__name__
    text = str(err).lower()
    return name in ("IntegrityError", "ProgrammingError", "OperationalError") and any(
        word in text for word in ("duplicate", "already exists", "unique", "locked")
    )


def make_storage(url: str, heartbeat: int | None = 60) -> optuna.storages.BaseStorage:
    """An Optuna storage for `url`.

    RDB URLs get a heartbeat, so a crashed worker's trial is failed after a grace period and
    retried once (no candidate is lost), and `pool_pre_ping`, so a connection the database
    dropped during a long GPU trial is replaced instead of failing the trial. `grpc://host:port`
    is a `flexopt storage-proxy`.
    """
    scheme = _scheme(url)
    try:
        if scheme == "grpc":
            return _grpc_storage(url)
        if scheme not in RDB_SCHEMES:
            raise FlexoptError(f"storage {mask_url(url)!r} is not supported; allowed: "
                               "sqlite:///FILE, postgresql://…, mysql+pymysql://…, "
                               "grpc://HOST:PORT")
        for attempt in range(OPEN_RETRIES):
            try:
                return _rdb_storage(url, heartbeat)
            except Exception as err:
                if not _is_race(err) or attempt == OPEN_RETRIES - 1:
                    raise
                time.sleep(random.uniform(0.05, 0.3) * (attempt + 1))
    except FlexoptError:
        raise
    except Exception as err:
        raise (storage_error(url, err) or err) from None
    raise AssertionError("unreachable")


def _rdb_storage(url: str, heartbeat: int | None) -> optuna.storages.RDBStorage:
    engine = {} if _scheme(url) == "sqlite" else {"pool_pre_ping": True}
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna; we need them
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if heartbeat is None:
            return optuna.storages.RDBStorage(driver_url(url), engine_kwargs=engine)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
        return optuna.storages.RDBStorage(
            driver_url(url), engine_kwargs=engine, heartbeat_interval=heartbeat,
            grace_period=2 * heartbeat, heartbeat_stale_trial_callback=retry,
        )


def parse_grpc(url: str) -> tuple[str, int]:
    """`grpc://host:port` → (host, port); anything else is one clear error."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "grpc" or not parts.hostname or port is None or parts.path not in ("", "/"):
        raise FlexoptError(f"storage {url!r} is not a gRPC proxy address; allowed: "
                           "grpc://HOST:PORT (see `flexopt storage-proxy`)")
    return parts.hostname, port


def _grpc_storage(url: str, timeout: float = 10.0) -> optuna.storages.BaseStorage:
    host, port = parse_grpc(url)
    import grpc  # noqa: F401  (a missing grpcio is one line, not a late lazy-import error)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        proxy = optuna.storages.GrpcStorageProxy(host=host, port=port)
    try:
        proxy.wait_server_ready(timeout=timeout)
    except ConnectionError:
        raise FlexoptError(f"storage {url!r} cannot be reached: no storage proxy answers at "
                           f"{host}:{port} within {timeout:g} s; start one with `flexopt "
                           "storage-proxy --storage URL --port PORT`") from None
    return proxy


def serve_proxy(storage: optuna.storages.BaseStorage, host: str, port: int) -> None:
    """Serve `storage` over gRPC until SIGINT or SIGTERM (Optuna's proxy; workers use grpc://).

    Optuna's `run_grpc_proxy_server` never stops its server: after Ctrl-C, once a client has
    connected, the process hung instead of exiting. So the server is built with Optuna's own
    `make_server`, and a signal stops it (2 s grace for requests in flight) and returns.
    """
    try:
        import grpc  # noqa: F401  (Optuna imports it lazily, deep inside the server)
        from optuna.storages._grpc.server import make_server
    except ImportError as err:
        raise storage_error(f"grpc://{host}:{port}", err) from None
    stop = threading.Event()
    handlers = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        server = make_server(storage, host, port)
    server.start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop(grace=2).wait()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def check_storage(storage: optuna.storages.BaseStorage, url: str) -> None:
    """Read the storage once, so an unreachable database is one line before any model loads."""
    try:
        storage.get_all_studies()
    except Exception as err:
        raise (storage_error(url, err) or err) from None


def study_names(storage: str) -> list[str]:
    """The studies in `storage` (locks left out); an unreachable or mistyped storage is one
    clear error."""
    if storage.startswith("sqlite:///"):
        db = Path(unquote(storage[len("sqlite:///"):]))
        if not db.is_file():  # Optuna would silently create an empty database
            raise FlexoptError(f"storage file {str(db)!r} does not exist (from {storage!r})")
        if not _is_optuna_sqlite(db):  # ... or add its tables to the user's other database
            raise FlexoptError(f"storage file {str(db)!r} is not an Optuna storage (it has no "
                               "studies table); allowed: the database of a flexopt search")
    try:
        studies = make_storage(storage, heartbeat=None).get_all_studies()
    except FlexoptError:
        raise
    except Exception as err:  # SQLAlchemy's errors for an unreachable or malformed URL
        raise (storage_error(storage, err) or err) from None
    return [s.study_name for s in studies if not s.study_name.endswith(LOCK_SUFFIX)]


def _is_optuna_sqlite(path: Path) -> bool:
    """Whether a SQLite file holds Optuna's tables, looked at read-only."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            row = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'studies'"
            ).fetchone()
    except sqlite3.Error:  # not a SQLite file at all
        return False
    return row is not None


class _HideLockStudies(logging.Filter):
    """Optuna logs every study it creates at INFO; the lock's studies are noise to a user."""

    def filter(self, record: logging.LogRecord) -> bool:
        return LOCK_SUFFIX not in record.getMessage()


def trials_without_heartbeat(storage: optuna.storages.BaseStorage,
                             trial_ids: list[int]) -> set[int]:
    """Which of these trials have no heartbeat recorded (RDB storages; else none).

    Optuna's stale-trial check skips such trials, so one whose worker died before its first
    heartbeat would stay RUNNING forever (`flexopt.search.loop` takes them over)."""
    backend = getattr(storage, "_backend", storage)  # Optuna wraps RDB storages in a cache
    if not trial_ids or not isinstance(backend, optuna.storages.RDBStorage):
        return set()
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    beat = models.TrialHeartbeatModel
    with _create_scoped_session(backend.scoped_session) as session:
        have = {tid for (tid,) in session.query(beat.trial_id).filter(
            beat.trial_id.in_(trial_ids))}
    return set(trial_ids) - have


LOCK_PATIENCE = 5.0  # seconds a lock may be held (holders need milliseconds) before a warning


class StudyLock:
    """A mutex over one study, shared by every worker on the same storage.

    Acquiring creates the study `<name>:flexopt-lock`; the storage's unique study name makes
    exactly one creator win, the others wait and retry. Releasing deletes it. A lock whose holder
    died is broken after `stale_after` seconds (holders keep it for milliseconds), by its study
    id, so a waiter never deletes a lock another waiter has just taken.

    A waiter is told (one warning) once the lock has been held `LOCK_PATIENCE` seconds (or half of
    `stale_after`), before it is broken: a killed holder's lock explains a minute of nothing.
    """

    def __init__(self, storage: optuna.storages.BaseStorage, study_name: str,
                 stale_after: float = 60.0) -> None:
        self.storage = storage
        self.name = study_name + LOCK_SUFFIX
        self.stale_after = stale_after
        self._rng = random.Random(uuid.uuid4().int)
        rdb_logger = logging.getLogger("optuna.storages._rdb.storage")
        if not any(isinstance(f, _HideLockStudies) for f in rdb_logger.filters):
            rdb_logger.addFilter(_HideLockStudies())

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        lock_id = self._acquire()
        try:
            yield
        finally:
            with contextlib.suppress(KeyError):
                self.storage.delete_study(lock_id)

    def _acquire(self) -> int:
        seen: tuple[int, float] | None = None  # (lock id, when we first saw it)
        told = False
        delay = 0.01
        while True:
            try:
                return self.storage.create_new_study([optuna.study.StudyDirection.MINIMIZE],
                                                     self.name)
            except optuna.exceptions.DuplicatedStudyError:
                pass
            try:
                held = self.storage.get_study_id_from_name(self.name)
            except KeyError:
                continue  # released meanwhile
            now = time.monotonic()
            if seen is None or seen[0] != held:
                seen, told = (held, now), False
            waited = now - seen[1]
            if not told and waited > min(LOCK_PATIENCE, self.stale_after / 2):
                told = True  # a killed worker's lock: say why nothing happens for a minute
                warnings.warn(f"study lock {self.name!r} has been held for {waited:.0f} s (its "
                              f"holder may have been killed); it is broken once held "
                              f"{self.stale_after:g} s", stacklevel=4)
            if waited > self.stale_after:
                with contextlib.suppress(KeyError):
                    self.storage.delete_study(held)
                continue
            time.sleep(delay * self._rng.uniform(0.5, 1.5))
            delay = min(delay * 2, 0.2)
