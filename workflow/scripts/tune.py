import json
from pathlib import Path

import pandas as pd
from dogbreed.backends.registry import rule_backend
from dogbreed.runtime import tracking
from dogbreed.runtime.rule_runner import run_rule
from dogbreed.training import jobspec


def main(smk):
    spec = smk.params.tuning
    # Same search, settings, data, code and placement → same study, which resumes; max_jobs may grow without a
    # new study. Its trials are its jobs with their tuned values on top (jobspec.merge, in the tuner).
    study = jobspec.job_spec(smk.params.job, *jobspec.read_channels(smk.input.channels), smk.input.training_code)
    study_name, fixed = study.name, study.hyperparameters
    Path(smk.params.study_db).parent.mkdir(parents=True, exist_ok=True)
    backend = rule_backend(smk)
    backend.prepare_jobs()  # the local backend's job launcher imports torch meanwhile
    parallel = min(spec["max_parallel_jobs"], smk.threads)
    print(
        f"tuning {study_name} on {smk.params.backend}: {spec['strategy']}, max_jobs={spec['max_jobs']}, "
        f"parallel={parallel}, trial logs under {smk.params.jobs_dir}/"
    )
    # MLflow (config tracking:, not a param: where runs are recorded reruns nothing): the trials under the run's
    # workflow run, which the final training joins (its id goes to best_hyperparameters.json)
    tracker, trials_tracking = tracking.tracker(smk.config), None
    if tracker is not None:
        workflow_run = tracker.workflow_run(Path(smk.output.best).parent, study_name, smk.params.backend)
        trials_tracking = tracking.TrialTracking(tracker, workflow_run, smk.params.backend)
        print(f"mlflow: the trials are runs under {tracker.run_link(workflow_run)}")
    rows, best = backend.tune(
        spec,
        fixed,
        study.channels,
        smk.params.jobs_dir,
        smk.params.source_dir,
        study_name,
        smk.params.study_db,
        parallel,
        tracking=trials_tracking,
    )
    if tracker is not None:
        objective = best["objective"]
        with tracking.best_effort("the tuning's best trial"):  # the final training joins the run later
            tracker.log(
                workflow_run,
                metrics={f"best_{objective['metric']}": objective["value"]},
                tags={tracking.TAG + "best_trial": best["job_name"]},
            )
            tracker.client.set_terminated(workflow_run, "FINISHED")
        best["tracking"] = {"workflow_run_id": workflow_run, **tracker.where()}
    table = pd.DataFrame(rows)
    table.to_csv(smk.output.trials, index=False)
    print(table.drop(columns=["log"], errors="ignore").to_string(index=False))
    best["study"] = study_name
    Path(smk.output.best).write_text(json.dumps(best, indent=2))
    tuned = ", ".join(
        f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}"  # a categorical may be a string
        for name, value in best["hyperparameters"].items()
    )
    return f"{len(rows)} trials, best {tuned} ({best['objective']['metric']} {best['objective']['value']:.4g})"


run_rule(main, snakemake)
