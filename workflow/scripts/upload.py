import json

import job_contract as contract
from dogbreed.backends.registry import rule_backend
from dogbreed.data import store
from dogbreed.runtime import naming
from dogbreed.runtime.rule_runner import run_rule

SPLITS = ("train", "valid", "test")


def main(smk):
    backend = rule_backend(smk)
    # the run's first side effect: its plan (run_plan.py, whose refusals came when the workflow was read) shown
    # before it, and on SageMaker priced and confirmed
    backend.approve_run(smk.params.plan, smk.params.costs, smk.params.store_uri)
    # the dataset's store prefix is its content: other data settings never share it, the same data always does
    digests = {split: contract.channel_digest(f"{smk.input.channels}/{split}") for split in SPLITS}
    prefix = naming.dataset_prefix(digests)
    channels, report = {}, {}
    for split in SPLITS:
        result = backend.upload(f"{smk.input.channels}/{split}", store.join(smk.params.store_uri, prefix, split))
        channels[split] = result.pop("uri")
        report[split] = result
        print(
            f"{split}: {channels[split]} ({result['uploaded']} uploaded, {result['unchanged']} already there, "
            f"{result['removed']} removed)"
        )
    with open(smk.output[0], "w") as out:
        json.dump(
            {"backend": smk.params.backend, "channels": channels, "digests": digests, "sync": report}, out, indent=2
        )
    uploaded = sum(result["uploaded"] for result in report.values())
    return f"{uploaded} files uploaded to {store.join(smk.params.store_uri, prefix)}"


run_rule(main, snakemake)
