# package the served artifact → start the endpoint → evaluate it → (optional) accuracy gate.
# deploy checks the endpoint (and brings it back); teardown stops it; no target depends on either.


rule package_model:
    input:
        code("package_model"),
        SERVING_CODE,
        model=rules.train.output.model,
    output:
        R("deploy/model.tar.gz"),
    log:
        R("logs/package_model.log"),
    conda:
        env("serving")
    params:
        source_dir=source_dir,
    script:
        "../scripts/package_model.py"


rule start_endpoint:
    input:
        code("start_endpoint"),
        model=rules.package_model.output[0],
        model_json=rules.train.output.model_json,  # the final training's MLflow run id, into endpoint.json
    output:
        R("endpoint.json"),
    log:
        R("logs/start_endpoint.log"),
    conda:
        env("serving")
    params:
        backend=config["backend"],
        backend_settings=backend_settings(),
        endpoint_name=ENDPOINT_NAME,
        state_dir=ENDPOINT_STATE,
        results_dir=lambda wildcards, output: str(Path(output[0]).parent),
    script:
        "../scripts/start_endpoint.py"


rule evaluate:
    input:
        code("evaluate"),
        endpoint=rules.start_endpoint.output[0],
        model_json=rules.train.output.model_json,  # the final training's MLflow run, for the evaluation
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
        results_dir=results_dir,
    script:
        "../scripts/evaluate.py"


rule accuracy_gate:
    # Separate from evaluate: when it fails, Snakemake deletes only this rule's output, and the
    # metrics that explain the failure stay on disk.
    input:
        code("accuracy_gate"),
        metrics=rules.evaluate.output.metrics,
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


rule deploy:
    # No output, so it runs whenever it is a target (and only it, on a complete run): it checks the
    # endpoint and brings back one that was stopped or died, without rerunning evaluate.
    input:
        code("deploy"),
        rules.start_endpoint.output,
        rules.evaluate.output,
        [rules.accuracy_gate.output] if config["min_accuracy"] is not None else [],
        rules.check_training_rules.output,
        rules.profiler_report.output,
        [rules.training_rules_gate.output] if config["profiling"]["stop_on"] else [],
        endpoint=rules.start_endpoint.output[0],
        model=rules.package_model.output[0],
        evaluation=rules.evaluate.output.metrics,
    log:
        R("logs/deploy.log"),
    conda:
        env("serving")
    params:
        backend=config["backend"],
        backend_settings=backend_settings(),
        state_dir=ENDPOINT_STATE,
        results_dir=results_dir,
    script:
        "../scripts/deploy.py"


rule teardown:
    # Never part of another target. It stops this run's endpoint (the options say which run) and
    # names the others this checkout started.
    input:
        code("teardown"),
    log:
        R("logs/teardown.log"),
    conda:
        env("serving")
    params:
        backend=config["backend"],
        backend_settings=backend_settings(),
        state_dir=ENDPOINT_STATE,
        endpoints_dir=ENDPOINTS_DIR,
        endpoint_name=ENDPOINT_NAME,
    script:
        "../scripts/teardown.py"
