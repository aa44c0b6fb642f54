"""The tuning spec (spec.py) as an Optuna study: the project's own tuner, for the backends without one.

  strategy: Bayesian | Random | Grid | Hyperband       → TPE / Random / Grid sampler; Hyperband pruner
  early_stopping: Off | Auto                           → no pruner / MedianPruner
  parameters                                           → suggest_float / suggest_int / suggest_categorical
Each trial reports its objective every epoch (trial_jobs.py reads it from the job's lines), so pruners can stop
poor trials early. The study lives in SQLite: an interrupted tune resumes, and a grown max_jobs runs only the
new trials. Trials carry SageMaker's status names, so both tuners' tables read alike.
"""

import math
import threading
from pathlib import Path

import optuna
from optuna.trial import TrialState

from dogbreed.backends.errors import JobInterrupted
from dogbreed.runtime import run_guard
from dogbreed.tuning import spec as tuning_spec

STATUS = {
    TrialState.COMPLETE: "Completed",
    TrialState.PRUNED: "Stopped",
    TrialState.FAIL: "Failed",
    TrialState.RUNNING: "InProgress",
    TrialState.WAITING: "Pending",
}


class StudyStorage(optuna.storages.RDBStorage):
    """Optuna's SQLite storage, with its trial-state changes made one at a time in this process.

    Parallel trials are threads that each take the next queued trial (a retried one) by reading it WAITING
    and writing it RUNNING; SQLite has no SELECT ... FOR UPDATE, so two threads could both take the same
    trial and run one job twice in one folder (optuna/optuna#4002). Only one tune runs per results folder
    (Snakemake's lock), so a lock in this process is enough."""

    _changing_state = threading.Lock()

    def set_trial_state_values(self, trial_id, state, values=None):
        with self._changing_state:
            return super().set_trial_state_values(trial_id, state, values)


class TrialFailed(RuntimeError):
    """One trial's job failed while training (its hyperparameters may be why): the study goes on."""


class NoTrialCompleted(RuntimeError):
    """The study ended without one completed trial: there is no best."""


class StudyStopped(RuntimeError):
    """A trial failed in a way no hyperparameters would change (a job that could not set up, an
    objective regex that matches nothing): the study stops at the first one, with one message."""


def suggest(trial, name: str, parameter: dict):
    kind = parameter["type"]
    log = parameter.get("scaling", "Auto") == "Logarithmic"
    if kind == "continuous":
        return trial.suggest_float(name, float(parameter["min"]), float(parameter["max"]), log=log)
    if kind == "integer":
        return trial.suggest_int(name, int(parameter["min"]), int(parameter["max"]), log=log)
    return trial.suggest_categorical(name, list(parameter["values"]))


def make_sampler(spec: dict, seed: int):
    strategy = spec["strategy"]
    if strategy in ("Bayesian", "Hyperband"):
        return optuna.samplers.TPESampler(seed=seed)
    if strategy == "Random":
        return optuna.samplers.RandomSampler(seed=seed)
    # Grid: every combination of the categorical values (spec.py refuses any other parameter with it)
    return optuna.samplers.GridSampler({n: list(p["values"]) for n, p in spec["parameters"].items()}, seed=seed)


def make_pruner(spec: dict):
    if spec["strategy"] == "Hyperband":
        return optuna.pruners.HyperbandPruner()
    if spec.get("early_stopping", "Off") == "Auto":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    return optuna.pruners.NopPruner()


def recover_interrupted(study) -> set:
    """Trials a killed or stopped tune left behind, or that stopped the study, are queued again with the
    same hyperparameters and the same job name, so the retry resumes from the job's checkpoint.

    Interrupted: left RUNNING (the tune was killed outright; only one tune runs per results folder,
    Snakemake's lock, so a RUNNING trial here is stale) or failed by an interruption (Ctrl-C,
    Snakemake's SIGTERM). Returns the numbers of all trials ever interrupted (they do not count
    against max_jobs).
    """
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
    for trial in trials:
        # a trial that stopped the study (it could not set up) runs again after the fix, as it was drawn
        again = trial.user_attrs.get("interrupted") or trial.user_attrs.get("stopped_study")
        if trial.number in retried or not (trial.state == TrialState.RUNNING or again):
            continue
        if trial.state == TrialState.RUNNING:
            study.tell(trial.number, state=TrialState.FAIL)
        resume = {"job_name": trial.user_attrs["job_name"]} if "job_name" in trial.user_attrs else {}
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number, **resume}, skip_if_exists=False)
        retried.add(trial.number)
    return retried


def trial_line(trial, spec, finished=None, total=None) -> str:
    """One line for a finished trial: number, hyperparameters, objective, seconds, status."""
    metric = spec["objective"]["metric"]
    values = " ".join(
        f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}" for name, value in trial.params.items()
    )
    seconds = trial.duration.total_seconds() if trial.duration else None
    status = STATUS.get(trial.state, trial.state.name)
    if trial.state == TrialState.COMPLETE:
        outcome = f"{metric}={trial.value:.4g}"
    elif trial.state == TrialState.PRUNED and trial.intermediate_values:
        epoch = max(trial.intermediate_values)
        outcome = f"{metric}={trial.intermediate_values[epoch]:.4g} at epoch {epoch}, below the others: stopped early"
    else:
        outcome = trial.user_attrs.get("failure", "")
    count = f" ({finished} of {total})" if finished is not None else ""
    return (
        f"trial {trial.number}{count}: {values} → {outcome}"
        + (f" in {seconds:.0f} s" if seconds is not None else "")
        + f" [{status}]"
    )


def trial_objective(spec, run_trial, tracking=None, stoppers=None):
    """Optuna's objective: the trial's hyperparameters drawn from the spec, its job run by run_trial, its outcome
    recorded on the trial (and in its MLflow run) the way recover_interrupted and trial_line read it. An error
    that stops the study is also appended to stoppers (Optuna drops one raised in its last parallel batch)."""
    stoppers = [] if stoppers is None else stoppers

    def end_run(trial, status, failure=None):
        if tracking is not None:
            tracking.end(trial, status, failure)

    def objective(trial):
        hyperparameters = {name: suggest(trial, name, p) for name, p in spec["parameters"].items()}

        def report(step, value):
            trial.report(value, step)
            return trial.should_prune()

        try:
            value = run_trial(trial, hyperparameters, report)
            if value is not None and not math.isfinite(value):  # a regex that reads "nan" too
                raise TrialFailed(f"objective is {value} (the training diverged)")
        except KeyboardInterrupt:  # Ctrl-C, Snakemake's SIGTERM, Snakemake killed: the rerun retries it
            trial.set_user_attr("interrupted", True)  # (its MLflow run stays RUNNING: the retry goes on in it)
            raise
        except TrialFailed as error:
            trial.set_user_attr("failure", str(error))
            end_run(trial, "Failed", str(error))
            raise
        except Exception as error:
            trial.set_user_attr("stopped_study", True)
            end_run(trial, "Failed", str(error))
            # the trials running beside it stop now (Optuna would wait for them to finish): each is
            # interrupted, and retried by the rerun
            stoppers.append(error)
            run_guard.stopping.set()
            raise
        end_run(trial, "Stopped" if value is None else "Completed")
        if value is None:
            raise optuna.TrialPruned()
        return value

    return objective


def run_study(
    spec: dict, run_trial, storage_path, study_name: str, parallel: int = 1, seed: int = 0, announce=True, tracking=None
):
    """Run trials until max_jobs have finished; run_trial(trial, hyperparameters, report) → objective.

    report(step, value) tells the pruner an intermediate objective and returns True when the trial
    should stop. A trial that raises TrialFailed is recorded as failed and the study goes on; any
    other error (StudyStopped: one that no hyperparameters would change) ends the study with it.
    announce: print one line per finished trial. tracking (tracking.TrialTracking): each trial's MLflow run
    ends with the trial's status. Returns the optuna study.
    """
    # Optuna's own lines (a warning and a traceback per failed trial) are replaced by trial_line.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    tuning_spec.check(spec)  # the run plan refused a bad spec already; this is for a direct caller
    direction = spec["objective"]["type"].lower()
    study = optuna.create_study(
        study_name=study_name,
        storage=StudyStorage(f"sqlite:///{storage_path}"),
        load_if_exists=True,
        direction=direction,
        pruner=make_pruner(spec),
    )
    # A resumed study seeded as the first run would replay that run's random draws, repeating its
    # configurations: the seed moves on with the trials already there (still the same for a rerun).
    study.sampler = make_sampler(spec, seed + len(study.get_trials(deepcopy=False)))
    interrupted = recover_interrupted(study)
    # a trial that stopped the study (it could not set up) does not count: it is queued again above
    finished = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
        if t.number not in interrupted
    ]
    remaining = int(spec["max_jobs"]) - len(finished)

    stoppers = []
    objective = trial_objective(spec, run_trial, tracking, stoppers)
    done = [len(finished)]

    def print_trial(study, trial):
        done[0] += 1
        print(trial_line(trial, spec, done[0], int(spec["max_jobs"])), flush=True)

    if remaining > 0:
        try:
            study.optimize(
                objective,
                n_trials=remaining,
                n_jobs=max(1, int(parallel)),
                catch=(TrialFailed,),
                callbacks=[print_trial] if announce else [],
            )
        except JobInterrupted:  # a trial stopped beside the stopper, raised first by Optuna (no signal's own)
            if not stoppers:
                raise
        finally:  # Optuna has waited for the trials running beside one that stopped the study: they stopped
            if stoppers:
                run_guard.stopping.clear()
        if stoppers:  # also where Optuna dropped it (its last parallel batch) or raised a stopped trial's first
            raise stoppers[0]
    return study


def trials_table(study, spec) -> list:
    """One row per trial (interrupted-and-retried ones included, marked), SageMaker's status names."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        row = {
            "trial": trial.number,
            "job_name": trial.user_attrs.get("job_name", ""),
            "status": STATUS.get(trial.state, trial.state.name),
            spec["objective"]["metric"]: trial.value if trial.state == TrialState.COMPLETE else None,
        }
        row.update({name: trial.params.get(name) for name in spec["parameters"]})
        # the last intermediate value shows how far a stopped trial got
        row["last_reported"] = (
            trial.intermediate_values[max(trial.intermediate_values)] if trial.intermediate_values else None
        )
        row["epochs_reported"] = len(trial.intermediate_values)
        row["seconds"] = trial.user_attrs.get("seconds")
        row["retry_of"] = trial.user_attrs.get("retry_of")
        row["log"] = trial.user_attrs.get("log", "")
        rows.append(row)
    return rows


def best_trial(study, spec) -> dict:
    completed = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not completed:
        logs = [
            t.user_attrs["log"] for t in study.get_trials(deepcopy=False) if Path(t.user_attrs.get("log", "")).is_file()
        ]
        raise NoTrialCompleted(
            f"no tuning trial completed in study {study.study_name}: see the trials' logs "
            f"({', '.join(logs) or 'none was written'})"
        )
    best = study.best_trial
    return {
        "hyperparameters": best.params,
        "trial": best.number,
        "job_name": best.user_attrs.get("job_name"),
        "objective": {"metric": spec["objective"]["metric"], "type": spec["objective"]["type"], "value": best.value},
        "trials_completed": len(completed),
    }
