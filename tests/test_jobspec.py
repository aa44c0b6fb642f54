"""The job spec (workflow/dogbreed/training/jobspec.py) without Snakemake: one merge of a job's hyperparameters, and an
identity that holds every setting that shapes what a job produces or where it runs, and nothing else."""

import re

import pytest
from conftest import REPO, full_config
from dogbreed.runtime import naming
from dogbreed.training import jobspec

CHANNELS = {"train": "s3://b/datasets/x/train", "valid": "s3://b/datasets/x/valid"}
DIGESTS = {"train": "240:aaaa", "valid": "48:bbbb", "test": "60:cccc"}
CODE = [REPO / "scripts/train.py", REPO / "scripts/job_contract.py"]
SAGEMAKER = {
    "backend": "sagemaker",
    "store": {"uri": "s3://bucket/dog-breed"},
    "backends": {"sagemaker": {"role": "arn:aws:iam::123456789012:role/R"}},
}


def spec(config, kind="train", tuned=None, digests=DIGESTS):
    return jobspec.job_spec(jobspec.job_config(config, kind), CHANNELS, digests, CODE, tuned=tuned)


def test_a_jobs_hyperparameters_are_its_layers_merged_once():
    config = full_config(
        {
            "hyperparameters": {"epochs": 10, "lr": 0.5},
            "tuning": {"trial_hyperparameters": {"epochs": 3}},
            "profiling": {"in_trials": False},
        }
    )
    study = spec(config, "trial")
    assert study.hyperparameters["epochs"] == 3 and study.hyperparameters["debug"] is False  # the trial's overrides
    assert study.hyperparameters["arch"] == "resnet18" and "feature_cache" not in study.hyperparameters  # model:
    assert study.hyperparameters["expect_data"] == "train=240:aaaa,valid=48:bbbb"  # the data check: the job's channels
    final = spec(config, "train", tuned={"lr": 0.01, "batch_size": 64})
    assert (final.hyperparameters["epochs"], final.hyperparameters["lr"], final.hyperparameters["batch_size"]) == (
        10,
        0.01,
        64,
    )
    assert final.hyperparameters["debug"] is True and final.hyperparameters["save_interval"] == 10
    features = spec(full_config({"hyperparameters": {"freeze_backbone": True}}), "features")
    assert set(features.hyperparameters) == {*jobspec.FEATURE_SETTINGS, "num_workers", "expect_data"} - {
        "resize",
        "augment",
    }
    assert features.hyperparameters["feature_views"] == 3


@pytest.mark.parametrize(
    "setting, value",
    [
        ("framework_version", "2.7"),
        ("py_version", "py311"),
        ("instance_type", "ml.g5.xlarge"),
        ("use_spot", True),
        ("region", "eu-west-1"),
        ("sagemaker_profiler", True),
    ],
)
def test_a_setting_that_shapes_the_job_renames_it(setting, value):
    base = full_config(SAGEMAKER)
    changed = full_config(SAGEMAKER, {"backends": {"sagemaker": {setting: value}}})
    for kind in ("trial", "train", "features"):
        assert spec(base, kind).name != spec(changed, kind).name, kind


def test_instances_and_processes_rename_the_final_training_alone():
    base = full_config(SAGEMAKER)
    ddp = full_config(
        SAGEMAKER,
        {
            "backends": {"sagemaker": {"instance_count": 2, "instance_type": "ml.g4dn.xlarge"}},
            "training": {"processes": 2},
        },
    )
    assert spec(base, "train").name != spec(ddp, "train").name
    assert spec(ddp, "train").instances == 2 and spec(ddp, "train").processes == 2
    for kind in ("trial", "features"):  # one process on one instance, whatever the final training's shape
        assert spec(base, kind).name == spec(ddp, kind).name and spec(ddp, kind).instances == 1


@pytest.mark.parametrize(
    "setting, value",
    [
        ("poll_seconds", 5),
        ("logs", "None"),
        ("max_run_hours", 1),
        ("inference_instance_type", "ml.m5.xlarge"),
        ("endpoint", "instance"),
        ("serverless_memory_mb", 6144),
        ("prices_per_hour", {"x": 1}),
        ("tags", {"team": "a"}),
    ],
)
def test_a_setting_that_does_not_shape_the_job_keeps_its_name(setting, value):
    base = full_config(SAGEMAKER)
    changed = full_config(SAGEMAKER, {"backends": {"sagemaker": {setting: value}}})
    assert spec(base).name == spec(changed).name


def test_the_data_and_the_code_are_the_jobs_own():
    config = full_config()
    assert spec(config).name != spec(config, digests={**DIGESTS, "train": "239:dddd"}).name
    assert spec(config).name == spec(config, digests={**DIGESTS, "test": "1:eeee"}).name  # not its channel
    other_code = jobspec.job_spec(jobspec.job_config(config, "train"), CHANNELS, DIGESTS, CODE[:1])
    assert other_code.name != spec(config).name
    # where the same data are stored is no part of it
    moved = jobspec.job_spec(
        jobspec.job_config(config, "train"),
        {k: v.replace("s3://b", "s3://c") for k, v in CHANNELS.items()},
        DIGESTS,
        CODE,
    )
    assert moved.name == spec(config).name
    assert re.fullmatch(
        r"tune-[0-9a-f]{10}", spec(config, "trial").name
    )  # a SageMaker tuning job name: 32 characters at most


def test_a_study_grows_max_jobs_under_its_name_but_not_a_new_search():
    config = full_config()
    assert (
        spec(config, "trial").name
        == spec(full_config({"tuning": {"max_jobs": 12, "max_parallel_jobs": 2}}), "trial").name
    )
    wider = full_config({"tuning": {"parameters": {"lr": {"type": "continuous", "min": 0.0001, "max": 0.1}}}})
    assert spec(config, "trial").name != spec(wider, "trial").name


def test_a_tuned_setting_the_cached_features_depend_on_is_refused():
    config = full_config(
        {
            "hyperparameters": {"freeze_backbone": True},
            "tuning": {"parameters": {"image_size": {"type": "categorical", "values": [128, 224]}}},
        }
    )
    with pytest.raises(
        ValueError, match="tuning.parameters tunes image_size, on which the cached backbone features depend"
    ):
        jobspec.uses_feature_cache(config)


def test_names_and_merges_are_built_in_one_place_each():
    """No job, study, dataset or endpoint name is spelt outside naming.py; no hyperparameter dict is merged
    outside jobspec.merge."""
    sources = {
        p: p.read_text()
        for p in [*(REPO / "workflow").rglob("*.py"), *(REPO / "workflow").rglob("*.smk"), REPO / "Snakefile"]
        if p.name != "naming.py"
    }
    for path, text in sources.items():
        for pattern in (
            r'"(train|tune|features|datasets)[-/]"',
            r'f"(train|tune|features|dogbreed)-\{',
            r"-trial-",
            r"-w\{",
            r"\{\*\*[^}]*hyperparameters",
        ):
            assert not re.search(pattern, text), (path, pattern)
    assert naming.job_name("train", [1]) == naming.job_name("train", [1]) != naming.job_name("train", [2])


@pytest.mark.parametrize(
    "setting, value",
    [("endpoint", "instance"), ("serverless_memory_mb", 6144), ("serverless_max_concurrency", 50)],
)
def test_an_endpoint_setting_is_no_param_of_the_job_rules(setting, value):
    """tune, train and extract_features get job_backend_settings as a param: an endpoint's setting there would
    retune and retrain for a redeploy."""
    base = full_config(SAGEMAKER)
    changed = full_config(SAGEMAKER, {"backends": {"sagemaker": {setting: value}}})
    assert jobspec.job_backend_settings(base) == jobspec.job_backend_settings(changed)
