import json

from dogbreed import store
from dogbreed.rule_runner import rule_backend, run_rule


def main(smk):
    backend = rule_backend(smk)
    # the first step with a side effect in the store: what may not run is refused before it
    backend.approve_run(smk.params.tuning, smk.params.store_uri)
    channels, report = {}, {}
    for split in ("train", "valid", "test"):
        result = backend.upload(f"{smk.input.channels}/{split}", store.join(smk.params.store_uri, smk.params.prefix, split))
        channels[split] = result.pop("uri")
        report[split] = result
        print(f"{split}: {channels[split]} ({result['uploaded']} uploaded, {result['unchanged']} already there, "
              f"{result['removed']} removed)")
    with open(smk.output[0], "w") as out:
        json.dump({"backend": smk.params.backend, "channels": channels, "sync": report}, out, indent=2)


run_rule(main, snakemake)
