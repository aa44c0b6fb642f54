# evaluation: the test split through the live endpoint, and the gate on its accuracy.


rule evaluate:
    input:
        code("evaluate"),
        endpoint=rules.start_endpoint.output[0],
        model=rules.package_model.output[0],
        manifest=rules.prepare.output.manifest,
        classes=rules.prepare.output.classes,
        channels=rules.prepare.output.channels,
    output:
        metrics=report(R("evaluation/metrics.json"), caption="../report/evaluation_metrics.rst", category="Evaluation"),
        predictions=R("evaluation/predictions.csv"),
    log:
        R("logs/evaluate.log"),
    conda:
        env("serving")
    params:
        backend=config["backend"],
        backend_settings=backend_settings(),
        batch_size=config["evaluation"]["batch_size"],
        max_request_bytes=config["evaluation"]["max_request_bytes"],
        retry_for_s=config["evaluation"]["retry_for_s"],
        results_dir=results_dir,
        state_dir=ENDPOINT_STATE,  # where the endpoint is recorded: evaluate brings back one that died
    script:
        "../scripts/evaluate.py"


rule accuracy_gate:
    # Separate from evaluate: when it fails, Snakemake deletes only this rule's output, and the
    # metrics that explain the failure stay on disk.
    input:
        code("accuracy_gate"),
        metrics=rules.evaluate.output.metrics,
        tracked=FINAL_RUN_RECORD,  # the evaluation in MLflow before a failure stops the run
    output:
        R("evaluation/accuracy_gate.txt"),
    log:
        R("logs/accuracy_gate.log"),
    conda:
        env("workflow")
    params:
        min_accuracy=config["min_accuracy"],
    script:
        "../scripts/accuracy_gate.py"
