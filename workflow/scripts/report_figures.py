from dogbreed import run_report
from dogbreed.rule_runner import run_rule


def main(smk):
    run_report.make_figures(
        dict(smk.input.items()), dict(smk.output.items()), smk.params.objective, smk.params.parameters
    )
    print(f"figures in {smk.output.data_summary.rsplit('/', 1)[0]}/")


run_rule(main, snakemake)
