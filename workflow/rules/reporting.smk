# The run report (`snakemake report`, part of the default target) and the figures it shares with
# Snakemake's own report (`snakemake --report report.html`; headline.tsv holds the numbers its landing
# page, workflow/report/workflow.rst, shows). Reads outputs only: no live endpoint.


rule report_figures:
    input:
        code("report_figures"),
        manifest=rules.prepare.output.manifest,
        channels=rules.prepare.output.channels,
        trials=rules.tune.output.trials,
        metrics_csv=rules.train.output.metrics,
        model_json=rules.train.output.model_json,
        model=rules.package_model.output[0],
        evaluation=rules.evaluate.output.metrics,
        predictions=rules.evaluate.output.predictions,
        best=rules.tune.output.best,
        verdicts=rules.check_training.output.verdicts,
    output:
        headline=report(R("report/headline.tsv"), caption="../report/headline.rst", category="Summary"),
        data_summary=report(R("report/data_summary.png"), caption="../report/data_summary.rst", category="Data"),
        data_summary_table=report(R("report/data_summary.csv"), caption="../report/data_summary.rst", category="Data"),
        trials_plot=report(R("report/trials.png"), caption="../report/trials.rst", category="Tuning"),
        training_curves=report(
            R("report/training_curves.png"), caption="../report/training_curves.rst", category="Training"
        ),
        per_class=report(R("report/per_class_accuracy.png"), caption="../report/per_class.rst", category="Evaluation"),
        confusion=report(R("report/confusion_matrix.png"), caption="../report/confusion.rst", category="Evaluation"),
        misclassified=report(
            R("report/misclassified.png"), caption="../report/misclassified.rst", category="Evaluation"
        ),
        misclassified_table=report(
            R("report/misclassified.csv"), caption="../report/misclassified_table.rst", category="Evaluation"
        ),
    log:
        R("logs/report_figures.log"),
    conda:
        env("workflow")
    params:
        objective=config["tuning"]["objective"]["metric"],
        parameters=config["tuning"]["parameters"],
    script:
        "../scripts/report_figures.py"


rule report:
    input:
        code("report"),
        unpack(lambda wildcards: dict(rules.report_figures.output.items())),  # the figures, by name
        rejected=rules.prepare.output.rejected,
        trials=rules.tune.output.trials,
        best=rules.tune.output.best,
        model_json=rules.train.output.model_json,
        metrics_csv=rules.train.output.metrics,
        verdicts=rules.check_training.output.verdicts,
        profiler_report=rules.profiler_report.output[0],
        endpoint=rules.start_endpoint.output[0],
        evaluation=rules.evaluate.output.metrics,
        tracked=rules.track_results.output[0],  # the comparison with an earlier run reads this one's metrics
    output:
        R("report.html"),
    log:
        R("logs/report.log"),
    conda:
        env("workflow")
    params:
        config=reported_config(),
    script:
        "../scripts/report.py"
