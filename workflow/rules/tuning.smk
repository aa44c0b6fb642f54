# tune: the tuning spec, run as trials (training jobs) of the backend; the winner as a JSON artifact.


rule tune:
    input:
        code("tune"),
        training_code=TRAINING_CODE,
        channels=TRAINING_CHANNELS,
    output:
        trials=report(R("tuning/trials.csv"), caption="../report/trials_table.rst", category="Tuning"),
        best=report(R("best_hyperparameters.json"), caption="../report/best_hyperparameters.rst", category="Tuning"),
    log:
        R("logs/tune.log"),
    conda:
        env("training")
    threads: workflow.cores  # shared out between the trials that run at once (tuning/trial_jobs.py: trial_resources)
    resources:
        **job_resources(),
    params:
        backend=config["backend"],
        backend_settings=job_backend_settings(),
        tuning=config["tuning"],
        job=job_config("trial"),
        source_dir=source_dir,
        study_db=R("tuning/study.sqlite"),  # not an output: it must survive an interrupted tune
        jobs_dir=R("jobs"),
    script:
        "../scripts/tune.py"
