# fetch → prepare → upload


rule fetch:
    input:
        code("fetch"),
    output:
        f"{RAW_DIR}/fetched.json",
    log:
        R("logs/fetch.log"),
    conda:
        env("workflow")
    params:
        source=config["data_source"],
        sha256=config["data_sha256"],
        store_endpoint_url=config["store"]["endpoint_url"] if config["data_source"].startswith("s3://") else "",
        fingerprint=download.source_fingerprint(config["data_source"]),
        demo_seed=config["data"]["demo_seed"],
        extraction_limits=config["data"]["extraction"],
    script:
        "../scripts/fetch.py"


rule prepare:
    input:
        code("prepare"),
        fetched=rules.fetch.output[0],
    output:
        manifest=R("data/manifest.csv"),
        rejected=report(R("data/rejected.csv"), caption="../report/rejected.rst", category="Data"),
        classes=R("data/classes.json"),
        channels=directory(R("data/channels")),
    log:
        R("logs/prepare.log"),
    conda:
        env("workflow")
    threads: 4
    params:
        valid_fraction=config["data"]["valid_fraction"],
        test_fraction=config["data"]["test_fraction"],
        split_seed=config["data"]["split_seed"],
        min_image_size=config["data"]["min_image_size"],
        max_image_bytes=config["data"]["max_image_bytes"],
        max_image_pixels=config["data"]["max_image_pixels"],
    script:
        "../scripts/prepare.py"


rule sample_image:
    # one test image at a fixed path, for the endpoint examples of the docs (curl … @results-demo/sample.jpg)
    input:
        code("sample_image"),
        manifest=rules.prepare.output.manifest,
        channels=rules.prepare.output.channels,
    output:
        R("sample.jpg"),
    log:
        R("logs/sample_image.log"),
    conda:
        env("workflow")
    script:
        "../scripts/sample_image.py"


rule upload:
    input:
        code("upload"),
        manifest=rules.prepare.output.manifest,
        channels=rules.prepare.output.channels,
    output:
        R("upload.json"),
    log:
        R("logs/upload.log"),
    conda:
        env("workflow")
    params:
        backend=config["backend"],
        # the cloud backend shows and prices the whole run (run_plan.py) before its first upload; no other backend
        # reads these (a changed plan is approved again)
        backend_settings=backend_settings() if config["backend"] == "sagemaker" else {},
        plan=run_plan.describe(config) if config["backend"] == "sagemaker" else "",
        costs=run_plan.costs(config),
        store_uri=config["store"]["uri"],
        store_endpoint_url=config["store"]["endpoint_url"],
    script:
        "../scripts/upload.py"
