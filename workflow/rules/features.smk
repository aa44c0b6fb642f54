# extract_features: with a frozen backbone, its features once, as the channels of tuning and training.


rule extract_features:
    input:
        code("extract_features"),
        feature_code=FEATURE_CODE,
        upload=rules.upload.output[0],
    output:
        R("features/channels.json"),
    log:
        R("logs/extract_features.log"),
    conda:
        env("training")
    threads: workflow.cores  # Snakemake sets OMP_NUM_THREADS to this for the job's process
    resources:
        **job_resources(),
    params:
        backend=config["backend"],
        backend_settings=job_backend_settings(),
        job=job_config("features"),
        store_uri=config["store"]["uri"],
        source_dir=source_dir,
        jobs_dir=R("jobs"),
    script:
        "../scripts/extract_features.py"
