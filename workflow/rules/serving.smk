# serving: package the served artifact → start the endpoint; teardown stops it (never part of another target).


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


rule endpoints:
    # Never part of another target: every endpoint this checkout started and has not torn down, whichever options
    # started it, with its age, its cost so far and the command that stops it.
    input:
        code("endpoints"),
    log:
        R("logs/endpoints.log"),
    conda:
        env("serving")
    params:
        endpoints_dir=ENDPOINTS_DIR,
    script:
        "../scripts/endpoints.py"
