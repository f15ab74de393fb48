"""Optuna searches kept in a database: resumable after a crash, shared by several processes.

``hparams_search=optuna`` runs this sweeper (Hydra finds it as
``hydra_plugins.vae_cats_sweeper.StudySweeper``). It is hydra-optuna-sweeper 1.3.0's
``OptunaSweeperImpl`` with another loop around the same ask/launch/tell steps:

- The study lives in ``hydra.sweeper.storage``: a SQLite file by default
  (``<sweep dir>/<study_name>.db``, the sweep dir fixed per study), or a PostgreSQL URL that
  several processes, on one machine or many, share.
- A sweep runs until the study holds ``n_trials`` trials in all, whoever ran them: the same
  command run again after a crash continues the study instead of starting ``n_trials`` more.
  A trial left running by a dead process is marked failed first (SQLite: every running
  trial, since only one process may use the file; PostgreSQL: those whose heartbeat stopped
  ``GRACE_PERIOD_S`` ago, Optuna's own stale-trial mechanism).
- Counting and asking happen under a lock (the SQLite file's lock, PostgreSQL's advisory
  lock), so N processes never create more than ``n_trials`` trials. Trial numbers come from
  Optuna, which numbers under a row lock of the study, so they are unique.
- Each trial runs as Hydra job ``<trial number>`` (its run folder ``<sweep dir>/<number>``)
  with ``hparams_search.study`` and ``hparams_search.trial`` among its overrides, so its
  config, lineage and W&B run name the study and the trial.
- A trial that fails (diverged, or a config that cannot be built) is told FAIL and the search
  goes on; ``optimization_results.yaml`` names the best finished trial, its run folder and
  its best checkpoint.
- A storage that cannot be used (bad or unreachable URL, a study created with another
  direction, search space or metric, a SQLite file another process holds) is one line and
  exit code 2 before any trial starts.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import re
import socket
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, NoReturn

import optuna
import sqlalchemy
import yaml
from hydra.core.utils import JobReturn
from hydra_plugins.hydra_optuna_sweeper._impl import (
    OptunaSweeperImpl,
    create_params_from_overrides,
)
from omegaconf import OmegaConf
from optuna.distributions import BaseDistribution, distribution_to_json
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RDBStorage
from optuna.trial import Trial, TrialState

from vae_cats.training.config_check import exit_with_error

log = logging.getLogger(__name__)

# A PostgreSQL trial records a heartbeat every HEARTBEAT_INTERVAL_S seconds; one silent for
# GRACE_PERIOD_S (its process or machine died) is marked failed by the next process that asks
# for a trial. Long enough that a busy database or a paused VM does not fail a live trial.
HEARTBEAT_INTERVAL_S = 60
GRACE_PERIOD_S = 300
# Study attributes a later run must match: the search it was created for.
_STUDY_ATTRS = ("optimized_metric", "search_space")
_STORAGE_KEY = "hydra.sweeper.storage"


class StudyError(ValueError):
    """A storage or study that this sweep cannot use; the message names the config key."""


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for logs and error messages)."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URL; None for other databases.

    Raises:
        StudyError: If ``url`` is not a database URL, is an in-memory SQLite database, or
            names a database other than SQLite and PostgreSQL.
    """
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise StudyError(
            f"{_STORAGE_KEY}: {url!r} is not a database URL "
            "(use sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DATABASE)"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return None
    if backend != "sqlite":
        raise StudyError(
            f"{_STORAGE_KEY}: {backend} is not supported (use sqlite:///PATH for one process "
            "or postgresql://USER:PASSWORD@HOST:PORT/DATABASE for several)"
        )
    if not parsed.database or parsed.database == ":memory:":
        raise StudyError(f"{_STORAGE_KEY}: an in-memory SQLite database cannot be resumed")
    return Path(parsed.database)


@contextmanager
def sqlite_lock(path: Path) -> Iterator[None]:
    """Hold ``<path>.lock`` exclusively while one sweep process uses the SQLite study: SQLite
    serialises writes but has no heartbeats, so a second process would count the first one's
    running trial as interrupted. flock is released by the kernel when the process dies.

    Raises:
        StudyError: If another process holds the lock.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(f"{path}.lock", "w")  # noqa: SIM115 - closed below, after the unlock
    except OSError as err:
        raise StudyError(f"{_STORAGE_KEY}: cannot write {path}: {err.strerror}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StudyError(
                f"{_STORAGE_KEY}: another sweep process is using {path}; a SQLite study serves "
                "one process at a time (wait for it, or share a postgresql:// study)"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def advisory_lock(engine: sqlalchemy.engine.Engine | None, study_name: str) -> Iterator[None]:
    """PostgreSQL session advisory lock keyed by the study name, held while a process counts
    the study's trials and asks for new ones; no-op without an engine (SQLite: the file lock
    already makes the process the only one)."""
    if engine is None:
        yield
        return
    key = int.from_bytes(hashlib.sha256(study_name.encode()).digest()[:8], "big", signed=True)
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
        try:
            yield
        finally:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})


@contextmanager
def heartbeats(storage: RDBStorage, trials: Sequence[Trial]) -> Iterator[None]:
    """Record the trials' heartbeats every ``HEARTBEAT_INTERVAL_S`` seconds while they run
    (as Optuna's ``study.optimize`` does; ask/tell leaves it to the caller)."""
    if not storage.is_heartbeat_enabled():
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            for trial in trials:
                storage.record_heartbeat(trial._trial_id)
            if stop.wait(HEARTBEAT_INTERVAL_S):
                return

    thread = threading.Thread(target=beat, name="optuna-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _reason(err: BaseException) -> str:
    """First line of a database error, the driver's own message when there is one."""
    cause = getattr(err, "orig", None) or err
    return str(cause).strip().splitlines()[0] if str(cause).strip() else repr(cause)


def connect(url: str) -> sqlalchemy.engine.Engine:
    """An engine for ``url`` whose server answered (the advisory lock's connection).

    Raises:
        StudyError: If the driver is missing or the server cannot be reached (password hidden).
    """
    try:
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        with engine.connect():
            return engine
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as err:
        raise StudyError(f"{_STORAGE_KEY}: cannot open {redact(url)}: {_reason(err)}") from None


def open_storage(url: str) -> RDBStorage:
    """Optuna's RDB storage at ``url`` (heartbeats on for PostgreSQL).

    Raises:
        StudyError: If the database cannot be opened or reached, naming it (password hidden).
    """
    shared = sqlite_path(url) is None
    try:
        with warnings.catch_warnings():
            # Heartbeats are marked experimental in Optuna 2.10; a warning would precede every
            # line a sweep prints.
            warnings.simplefilter("ignore", ExperimentalWarning)
            return RDBStorage(
                url,
                heartbeat_interval=HEARTBEAT_INTERVAL_S if shared else None,
                grace_period=GRACE_PERIOD_S if shared else None,
            )
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as err:
        raise StudyError(f"{_STORAGE_KEY}: cannot open {redact(url)}: {_reason(err)}") from None


def check_study(study: optuna.Study, attrs: dict[str, Any], where: str) -> None:
    """Give a new study the attributes of this search; refuse an existing one created for
    another search (metric or search space), which would mix incomparable trials.

    Raises:
        StudyError: Naming the key that differs.
    """
    stored = study.user_attrs
    if not any(name in stored for name in _STUDY_ATTRS) and not study.trials:
        for name in _STUDY_ATTRS:
            study.set_user_attr(name, attrs[name])
        return
    for name, key in (
        ("optimized_metric", "optimized_metric"),
        ("search_space", "hydra.sweeper.params"),
    ):
        if name in stored and stored[name] != attrs[name]:
            raise StudyError(
                f"{key}: study {study.study_name!r} in {where} was created for "
                f"{stored[name]}, not {attrs[name]} (give another hydra.sweeper.study_name)"
            )


def _trial_result(ret: JobReturn) -> dict[str, Any]:
    """The job's ``result.yaml`` (written by ``lineage.save_job_result``), or {} if none."""
    if ret.hydra_cfg is None:
        return {}
    path = Path(ret.hydra_cfg.hydra.runtime.output_dir) / "result.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else {}


class StudySweeperImpl(OptunaSweeperImpl):
    """hydra-optuna-sweeper's sweeper with the study kept in a database and run to
    ``n_trials`` trials in all (module docstring)."""

    def sweep(self, arguments: list[str]) -> None:
        """Run trials until the study holds ``n_trials``, then write
        ``<sweep dir>/optimization_results.yaml``. Refusals: one line, exit code 2; no trial
        finished: one line, exit code 1."""
        if self.config is None or self.launcher is None:
            raise RuntimeError("StudySweeperImpl.sweep called before setup")
        self._process_searchspace_config()
        distributions, fixed_params = create_params_from_overrides(
            self._parse_sweeper_params_config() + list(arguments)
        )
        if self.search_space_distributions:
            distributions = {**self.search_space_distributions, **distributions}
        for name in fixed_params:
            distributions.pop(name, None)
        if not re.fullmatch(r"[\w.-]+", str(self.study_name)):
            _refuse(
                f"hydra.sweeper.study_name: {self.study_name!r} must be letters, digits, _ . - "
                "(it names the study's folder and database file)"
            )
        if isinstance(self.sampler, optuna.samplers.GridSampler) or not isinstance(
            self.sampler, optuna.samplers.BaseSampler
        ):
            _refuse("hydra.sweeper.sampler: the grid sampler is not supported (use tpe or random)")
        attrs = {
            "optimized_metric": str(self.config.get("optimized_metric")),
            "search_space": {name: distribution_to_json(d) for name, d in distributions.items()},
        }
        with ExitStack() as stack:
            try:
                study, storage, engine = self._load_study(stack, attrs)
            except StudyError as err:
                _refuse(str(err))
            self._run_trials(study, storage, engine, distributions, fixed_params)
        self._save_results(study, Path(self.config.hydra.sweep.dir))

    def _load_study(
        self, stack: ExitStack, attrs: dict[str, Any]
    ) -> tuple[optuna.Study, RDBStorage | None, sqlalchemy.engine.Engine | None]:
        """Open (or create) the study; with SQLite, also take its file lock for the sweep."""
        url = str(self.storage) if self.storage else None
        storage = engine = None
        where = "memory"
        if url is not None:
            path = sqlite_path(url)
            if path is not None:
                stack.enter_context(sqlite_lock(path))
            else:
                engine = connect(url)
                stack.callback(engine.dispose)
            where = redact(url)
        # The sweeper logs the study itself; Optuna's own lines would precede a refusal.
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # Under the study's lock: processes starting at once on an empty database would race
        # to create Optuna's tables and the study.
        with advisory_lock(engine, str(self.study_name)):
            storage = open_storage(url) if url is not None else None
            try:
                study = optuna.create_study(
                    study_name=self.study_name,
                    storage=storage,
                    sampler=self.sampler,
                    directions=self._get_directions(),
                    load_if_exists=True,
                )
            except ValueError as err:  # "Cannot overwrite study direction from ... to ..."
                raise StudyError(
                    f"hydra.sweeper.direction: study {self.study_name!r} in {where}: {err} "
                    "(give another hydra.sweeper.study_name)"
                ) from None
            check_study(study, attrs, where)
        if storage is not None and engine is None:
            # The SQLite lock makes this the only process: a running trial is a dead one's.
            for trial in storage.get_all_trials(study._study_id, states=(TrialState.RUNNING,)):
                storage.set_trial_user_attr(trial._trial_id, "error", "interrupted")
                storage.set_trial_state(trial._trial_id, TrialState.FAIL)
                log.warning(f"Trial {trial.number} was interrupted: marked failed")
        log.info(f"Study {study.study_name!r} in {where}: {len(study.trials)} trials so far")
        return study, storage, engine

    def _ask(self, study: optuna.Study, engine: sqlalchemy.engine.Engine | None) -> list[Trial]:
        """Up to ``n_jobs`` new trials, none once the study holds ``n_trials``."""
        with advisory_lock(engine, study.study_name):
            if engine is not None:
                for number in _fail_stale(study):
                    log.warning(f"Trial {number} stopped sending heartbeats: marked failed")
            taken = len(study.get_trials(deepcopy=False))
            if engine is not None:
                # Every process starts from the same sampler seed: without a fresh seed, N
                # processes would propose the same random start-up trials N times over.
                self.sampler.reseed_rng()
            return [study.ask() for _ in range(min(self.n_jobs, self.n_trials - taken))]

    def _run_trials(
        self,
        study: optuna.Study,
        storage: RDBStorage | None,
        engine: sqlalchemy.engine.Engine | None,
        distributions: dict[str, BaseDistribution],
        fixed_params: dict[str, Any],
    ) -> None:
        host = socket.gethostname()
        while trials := self._ask(study, engine):
            overrides = [
                (
                    *trial_overrides,
                    f"hparams_search.study={study.study_name}",
                    f"hparams_search.trial={trial.number}",
                )
                for trial, trial_overrides in zip(
                    trials,
                    self._configure_trials(trials, distributions, fixed_params),
                    strict=True,
                )
            ]
            for trial in trials:
                trial.set_user_attr("host", host)
            # Asked under one lock, a batch's numbers are consecutive: job number = trial number.
            with heartbeats(storage, trials) if storage else ExitStack():
                returns = self.launcher.launch(  # type: ignore[union-attr]
                    overrides, initial_job_idx=trials[0].number
                )
            failures = [
                self._tell(study, trial, ret) for trial, ret in zip(trials, returns, strict=True)
            ]
            if sum(failures) / len(returns) > self.max_failure_rate:
                for ret in returns:
                    ret.return_value  # noqa: B018 - raises the failed job's own error

    def _tell(self, study: optuna.Study, trial: Trial, ret: JobReturn) -> bool:
        """Record the trial's outcome; True when it failed."""
        result = _trial_result(ret)
        if ret.hydra_cfg is not None:
            trial.set_user_attr(
                "run_dir", str(Path(ret.hydra_cfg.hydra.runtime.output_dir).absolute())
            )
        if result.get("best_checkpoint"):
            trial.set_user_attr("best_checkpoint", str(Path(result["best_checkpoint"]).absolute()))
        try:
            value = float(ret.return_value)
        except Exception as err:  # noqa: BLE001 - any failure of the job is a failed trial
            message = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
            trial.set_user_attr("error", message)
            study.tell(trial, state=TrialState.FAIL)
            log.warning(f"Trial {trial.number} failed: {message}")
            return True
        study.tell(trial, value)
        return False

    def _save_results(self, study: optuna.Study, sweep_dir: Path) -> None:
        states = [t.state for t in study.get_trials(deepcopy=False)]
        counts = {
            state.name.lower(): states.count(state) for state in TrialState if state in states
        }
        try:
            best = study.best_trial
        except ValueError:
            exit_with_error(
                f"no trial of study {study.study_name!r} finished ({counts}); "
                f"see each trial's result.yaml in {sweep_dir}",
                1,
            )
        results = {
            "name": "optuna",
            "study_name": study.study_name,
            "storage": redact(str(self.storage)) if self.storage else None,
            "trials": counts,
            "best_trial": best.number,
            "best_params": best.params,
            "best_value": best.value,
            "best_run_dir": best.user_attrs.get("run_dir"),
            "best_checkpoint": best.user_attrs.get("best_checkpoint"),
            "best_host": best.user_attrs.get("host"),
        }
        log.info(f"Best trial {best.number}: {best.params} -> {best.value}")
        OmegaConf.save(
            OmegaConf.create(results),
            sweep_dir / "optimization_results.yaml",
        )


def _fail_stale(study: optuna.Study) -> list[int]:
    """Numbers of the running trials whose heartbeat stopped, now marked failed."""
    before = {t._trial_id: t.number for t in study.get_trials(states=(TrialState.RUNNING,))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    after = {t._trial_id for t in study.get_trials(states=(TrialState.RUNNING,))}
    return [number for trial_id, number in before.items() if trial_id not in after]


def _refuse(message: str) -> NoReturn:
    exit_with_error(message, 2)
