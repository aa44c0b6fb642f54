# train: the final training job with the best hyperparameters over the fixed ones.


rule train:
    input:
        code(*BACKEND_MODULES, "naming"),
        training_code=TRAINING_CODE,
        upload=rules.upload.output[0],
        best=rules.tune.output.best,
    output:
        model=R("training/model.tar.gz"),
        model_json=R("training/model.json"),
        metrics=R("training/metrics.csv"),
    params:
        backend=config["backend"],
        backend_settings=config["backends"].get(config["backend"], {}),
        fixed_hyperparameters=fixed_hyperparameters(),
        source_dir=str(SCRIPTS_DIR),
        jobs_dir=R("jobs"),
    log:
        R("logs/train.log"),
    script:
        "../scripts/train.py"
