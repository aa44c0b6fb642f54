import json
import shutil
from pathlib import Path

import pandas as pd
from dogbreed.checks import artifacts
from dogbreed.reporting import profiler_page
from dogbreed.runtime.rule_runner import run_rule


def main(smk):
    page = profiler_page.build_report(
        json.loads(Path(smk.input.model_json).read_text()),
        json.loads(Path(smk.input.verdicts).read_text()),
        artifacts.load_debug_tables(smk.input.tables),
        artifacts.load_profile(f"{smk.input.output}/profiler"),
        pd.read_csv(smk.input.metrics),
    )
    Path(smk.output[0]).parent.mkdir(parents=True, exist_ok=True)
    Path(smk.output[0]).write_text(page, encoding="utf-8")
    done = f"wrote {smk.output[0]}"
    theirs = Path(smk.input.output) / "sagemaker-profiler-report"
    if theirs.is_dir():  # SageMaker's own ProfilerReport, where the account still runs Debugger rules
        target = Path(smk.output[0]).parent / "sagemaker"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(theirs, target)
        done += f" (and SageMaker's own, {target}/)"
    return done


run_rule(main, snakemake)
