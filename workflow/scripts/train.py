import json
import shutil
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from dogbreed import metrics, naming, store
from dogbreed.rule_runner import rule_backend, run_rule


def main(smk):
    channels = json.loads(Path(smk.input.channels).read_text())["channels"]
    best = json.loads(Path(smk.input.best).read_text())
    hyperparameters = {**smk.params.fixed_hyperparameters, **best["hyperparameters"]}
    train_channels = {k: channels[k] for k in ("train", "valid")}
    job_name = "train-" + naming.stable_hash([hyperparameters, train_channels, naming.code_digest(smk.input.training_code)])
    backend = rule_backend(smk)
    # local: the job's own few lines above the bar (tqdm.write keeps them apart), the rest, smdebug's
    # chatter included, only in its log; the SDK's backends stream the job's output themselves
    echoed = smk.params.backend != "local"
    with tqdm(total=int(hyperparameters.get("epochs", 0)) or None, desc=f"train {job_name}", unit="epoch") as progress:
        def show(line):
            if not echoed and metrics.worth_showing(line):
                progress.write(line.rstrip())
            if metrics.parse_epoch_line(line) is not None:
                progress.update(1)
            return False  # never stop the job

        result = backend.train(job_name, hyperparameters, train_channels, smk.params.jobs_dir, smk.params.source_dir,
                               on_line=show, echo=False)
    # a local copy of the artifact, wherever the job ran
    shutil.copyfile(store.local_path(result["model_uri"]), smk.output.model)
    shutil.copytree(Path(result["output_dir"]) / "data", smk.output.output)  # debug tensors, profiler files
    pd.DataFrame(result.pop("metrics")).to_csv(smk.output.metrics, index=False)
    result["tuned_from"] = {"trial": best["trial"], "job_name": best["job_name"], "study": best.get("study")}
    Path(smk.output.model_json).write_text(json.dumps(result, indent=2))
    print(f"trained {job_name} in {result['seconds']} s: {result['model_uri']}; its whole log: {result['log']}")


run_rule(main, snakemake)
