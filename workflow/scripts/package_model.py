from dogbreed.runtime import run_options
from dogbreed.runtime.rule_runner import run_rule
from dogbreed.serving.packaging import package_for_serving


def main(smk):
    remake = run_options.command("deploy --forcerun train")
    package_for_serving(smk.input.model, smk.params.source_dir, smk.output[0], remake)
    return f"packed {smk.output[0]} with code/ from {smk.params.source_dir}"


run_rule(main, snakemake)
