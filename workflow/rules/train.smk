# train: the final training job with the best hyperparameters over the fixed ones.


rule train:
    input:
        code("train"),
        training_code=TRAINING_CODE,
        channels=TRAINING_CHANNELS,
        best=rules.tune.output.best,
    output:
        model=R("training/model.tar.gz"),
        model_json=R("training/model.json"),
        metrics=report(R("training/metrics.csv"), caption="../report/training_metrics.rst", category="Training"),
        output=directory(R("training/output")),  # the job's output data: debug tensors, profiler files
    log:
        R("logs/train.log"),
    conda:
        env("training")
    threads: workflow.cores  # Snakemake sets OMP_NUM_THREADS to this for the job's process
    resources:
        **job_resources(),
    params:
        backend=config["backend"],
        backend_settings=job_backend_settings(),
        job=job_config("train"),
        source_dir=source_dir,
        jobs_dir=R("jobs"),
    script:
        "../scripts/train.py"


rule check_training_rules:
    # Debugger and ProfilerReport rules over the final training's own artifacts (docs/architecture.md §3).
    input:
        code("check_training_rules"),
        output=rules.train.output.output,
        model_json=rules.train.output.model_json,  # the final training's MLflow run, for the verdicts
    output:
        rules=R("debugger/rules.json"),
        tables=directory(R("debugger/tables")),  # the debug tensors as CSV, read once from smdebug
    log:
        R("logs/check_training_rules.log"),
    conda:
        env("training")
    params:
        rules=config["profiling"]["rules"],
    script:
        "../scripts/check_training_rules.py"


rule profiler_report:
    input:
        code("profiler_report"),
        rules=rules.check_training_rules.output.rules,
        tables=rules.check_training_rules.output.tables,
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


rule training_rules_gate:
    # Like SageMaker's StopTraining action, after the fact: fails the run when a chosen rule
    # triggered. A separate rule, so rules.json and the report survive the failure.
    input:
        code("training_rules_gate"),
        rules=rules.check_training_rules.output.rules,
    output:
        R("debugger/gate.txt"),
    log:
        R("logs/training_rules_gate.log"),
    conda:
        env("workflow")
    params:
        stop_on=config["profiling"]["stop_on"],
    script:
        "../scripts/training_rules_gate.py"
