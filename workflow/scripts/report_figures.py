from dogbreed.reporting import run_page
from dogbreed.runtime.rule_runner import run_rule


def main(smk):
    run_page.make_figures(
        dict(smk.input.items()), dict(smk.output.items()), smk.params.objective, smk.params.parameters
    )
    return f"figures in {smk.output.data_summary.rsplit('/', 1)[0]}/"


run_rule(main, snakemake)
