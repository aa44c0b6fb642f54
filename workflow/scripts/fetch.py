from dogbreed.data import download
from dogbreed.runtime.rule_runner import run_rule


def main(smk):
    info = download.fetch(
        smk.params.source,
        smk.output[0].rsplit("/", 1)[0],
        smk.params.sha256,
        smk.params.demo_seed,
        smk.params.extraction_limits,
    )
    download.write_fetched(info, smk.output[0])
    return f"fetched {info['kind']} source into {info['root']}"


run_rule(main, snakemake)
