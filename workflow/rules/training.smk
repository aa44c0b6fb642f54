# training: the final training job with the best hyperparameters over the fixed ones.


rule train:
    input:
        code("launch_training"),
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
        "../scripts/launch_training.py"
