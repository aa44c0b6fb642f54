import json
from pathlib import Path

from dogbreed import features, jobspec
from dogbreed.backends import rule_backend
from dogbreed.rule_runner import run_rule


def main(smk):
    images = json.loads(Path(smk.input.upload).read_text())["channels"]
    job = jobspec.job_spec(smk.params.job, *jobspec.read_channels(smk.input.upload), smk.input.feature_code)
    result = features.extract(rule_backend(smk), job, smk.params.store_uri, smk.params.jobs_dir, smk.params.source_dir)
    Path(smk.output[0]).write_text(json.dumps({**result, "image_channels": images}, indent=2))


run_rule(main, snakemake)
