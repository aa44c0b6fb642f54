# training checks: SageMaker's Debugger and ProfilerReport rules, evaluated over the final training's own
# recordings, the profiler report, and the gate that fails the run on a chosen rule.


rule check_training:
    # Debugger and ProfilerReport rules over the final training's own artifacts (docs/architecture.md §3).
    input:
        code("check_training"),
        output=rules.train.output.output,
    output:
        verdicts=R("debugger/rules.json"),
        tables=directory(R("debugger/tables")),  # the debug record as CSV tables, read once
    log:
        R("logs/check_training.log"),
    conda:
        env("training")
    params:
        check_settings=config["profiling"]["rules"],
    script:
        "../scripts/check_training.py"


rule profiler_report:
    input:
        code("profiler_report"),
        verdicts=rules.check_training.output.verdicts,
        tables=rules.check_training.output.tables,
        output=rules.train.output.output,
        model_json=rules.train.output.model_json,
        metrics=rules.train.output.metrics,
    output:
        report(R("profiler/profiler-report.html"), caption="../report/profiler_report.rst", category="Profiling"),
    log:
        R("logs/profiler_report.log"),
    conda:
        env("training")
    script:
        "../scripts/profiler_report.py"


rule training_gate:
    # Like SageMaker's StopTraining action, after the fact: fails the run when a chosen rule
    # triggered. A separate rule, so rules.json and the report survive the failure.
    input:
        code("training_gate"),
        verdicts=rules.check_training.output.verdicts,
        tracked=FINAL_RUN_RECORD,  # the verdicts in MLflow before a failure stops the run
    output:
        R("debugger/gate.txt"),
    log:
        R("logs/training_gate.log"),
    conda:
        env("workflow")
    params:
        stop_on=config["profiling"]["stop_on"],
    script:
        "../scripts/training_gate.py"
