import json
from pathlib import Path

import pandas as pd

from dogbreed import naming
from dogbreed.rule_runner import rule_backend, run_rule


def main(smk):
    spec = smk.params.tuning
    channels = json.loads(Path(smk.input.channels).read_text())["channels"]
    fixed = {**smk.params.fixed_hyperparameters, **spec["trial_hyperparameters"]}
    # Same search, data and code → same study, which resumes; max_jobs may grow without a new study.
    searched = {k: v for k, v in spec.items() if k not in ("max_jobs", "max_parallel_jobs")}
    study_name = "tune-" + naming.stable_hash([searched, fixed, channels, naming.code_digest(smk.input.training_code)])
    Path(smk.params.study_db).parent.mkdir(parents=True, exist_ok=True)
    backend = rule_backend(smk)
    parallel = min(spec["max_parallel_jobs"], smk.threads)
    print(f"tuning {study_name} on {smk.params.backend}: {spec['strategy']}, max_jobs={spec['max_jobs']}, "
          f"parallel={parallel}, trial logs under {smk.params.jobs_dir}/")
    rows, best = backend.tune(spec, fixed, {k: channels[k] for k in ("train", "valid")}, smk.params.jobs_dir,
                              smk.params.source_dir, study_name, smk.params.study_db, parallel)
    table = pd.DataFrame(rows)
    table.to_csv(smk.output.trials, index=False)
    print(table.drop(columns=["log"], errors="ignore").to_string(index=False))
    best["study"] = study_name
    Path(smk.output.best).write_text(json.dumps(best, indent=2))
    print(f"best: {best['hyperparameters']} ({best['objective']['metric']}={best['objective']['value']})")


run_rule(main, snakemake)
