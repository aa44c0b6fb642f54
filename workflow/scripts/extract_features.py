import json
from pathlib import Path

from dogbreed.backends.registry import rule_backend
from dogbreed.runtime.rule_runner import run_rule
from dogbreed.training import features, jobspec


def main(smk):
    images = json.loads(Path(smk.input.upload).read_text())["channels"]
    job = jobspec.job_spec(smk.params.job, *jobspec.read_channels(smk.input.upload), smk.input.feature_code)
    result = features.extract(rule_backend(smk), job, smk.params.store_uri, smk.params.jobs_dir, smk.params.source_dir)
    Path(smk.output[0]).write_text(json.dumps({**result, "image_channels": images}, indent=2))


run_rule(main, snakemake)
