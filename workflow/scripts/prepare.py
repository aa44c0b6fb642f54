import json

from dogbreed.data import verify_split
from dogbreed.runtime.rule_runner import run_rule


def main(smk):
    root = json.loads(open(smk.input.fetched).read())["root"]
    summary = verify_split.prepare(
        root,
        smk.output.channels.rsplit("/", 1)[0],
        smk.params.valid_fraction,
        smk.params.test_fraction,
        smk.params.split_seed,
        smk.params.min_image_size,
        workers=smk.threads,
        max_bytes=smk.params.max_image_bytes,
        max_pixels=smk.params.max_image_pixels,
    )
    return (
        f"{summary['usable']} images of {summary['classes']} classes {summary['per_split']}; "
        f"rejected {summary['rejected']} (see {smk.output.rejected})"
    )


run_rule(main, snakemake)
