import json
from pathlib import Path

from dogbreed import features
from dogbreed.rule_runner import rule_backend, run_rule


def main(smk):
    images = json.loads(Path(smk.input.upload).read_text())["channels"]
    result = features.extract(rule_backend(smk), smk.params.hyperparameters, images, smk.input.manifest,
                              smk.params.store_uri, smk.params.jobs_dir, smk.params.source_dir, smk.input.feature_code)
    Path(smk.output[0]).write_text(json.dumps({**result, "image_channels": images}, indent=2))


run_rule(main, snakemake)
