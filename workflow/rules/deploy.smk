# deploy: the target. The endpoint up and evaluated, the training checked and profiled.


rule deploy:
    # No output, so it runs whenever it is a target (and only it, on a complete run): it checks the
    # endpoint and brings back one that was stopped or died, without rerunning evaluate.
    input:
        code("deploy"),
        rules.sample_image.output,
        [rules.accuracy_gate.output] if config["min_accuracy"] is not None else [],
        rules.check_training.output,
        rules.profiler_report.output,
        rules.track_results.output,
        [rules.training_gate.output] if config["profiling"]["stop_on"] else [],
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
