# tracking: what the rules after the final training made, into its MLflow run (docs/architecture.md §8).


rule track_results:
    # One rule for the rule verdicts, the profiler report and the evaluation: MLflow's import and the opening of
    # its store take about two seconds a process, paid here once rather than by each rule that makes one. Where
    # runs are recorded comes from the config itself (tracking.py), not params: changing it reruns nothing.
    input:
        code("track_results"),
        model_json=rules.train.output.model_json,  # the final training's MLflow run
        verdicts=rules.check_training.output.verdicts,
        profiler_report=rules.profiler_report.output[0],
        evaluation=rules.evaluate.output.metrics,
    output:
        FINAL_RUN_RECORD,
    log:
        R("logs/track_results.log"),
    conda:
        env("workflow")
    script:
        "../scripts/track_results.py"
