import json
from pathlib import Path

from dogbreed.reporting import run_page
from dogbreed.runtime import tracking
from dogbreed.runtime.rule_runner import run_rule

FIGURES = [
    "data_summary",
    "data_summary_table",
    "trials_plot",
    "training_curves",
    "per_class",
    "confusion",
    "misclassified",
    "misclassified_table",
]


def main(smk):
    figures = {name: smk.input[name] for name in FIGURES}
    model = json.loads(Path(smk.input.model_json).read_text())
    earlier = tracking.earlier_final_run(smk.config, model)  # None: tracking off, or no earlier run on this data
    page = run_page.build_page(smk.params.config, dict(smk.input.items()), figures, smk.output[0], earlier)
    Path(smk.output[0]).write_text(page, encoding="utf-8")
    tracking.log_to_final_run(smk.config, smk.input.model_json, reports=[smk.output[0]])
    return f"wrote {smk.output[0]}" + (f", beside the earlier run {earlier['run_name']}" if earlier else "")


run_rule(main, snakemake)
