import re

import pytest
from conftest import REPO, copy_workflow, snakemake
from dogbreed.runtime.config import coerce_command_line


def test_command_line_values_are_typed():
    config = coerce_command_line({"confirm_cloud": "true", "min_accuracy": "0.7", "backend": "local", "results_dir": 5})
    assert config == {"confirm_cloud": True, "min_accuracy": 0.7, "backend": "local", "results_dir": "5"}
    assert coerce_command_line({"min_accuracy": "null", "confirm_cloud": "False"}) == {
        "min_accuracy": None,
        "confirm_cloud": False,
    }
    with pytest.raises(ValueError, match="confirm_cloud"):
        coerce_command_line({"confirm_cloud": "maybe"})
    with pytest.raises(ValueError, match="min_accuracy"):
        coerce_command_line({"min_accuracy": "high"})


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("config"))


def test_dry_run_plans_the_whole_chain(workdir):
    out = snakemake(
        workdir,
        "-n",
        "deploy",
        "--configfile",
        "config/demo.yaml",
        "--config",
        "min_accuracy=0.5",
        "confirm_cloud=false",
    ).stdout
    for rule in (
        "fetch",
        "prepare",
        "upload",
        "tune",
        "train",
        "package_model",
        "start_endpoint",
        "evaluate",
        "accuracy_gate",
    ):
        assert re.search(rf"^{rule}\s+1$", out, re.MULTILINE), out  # the plan's job table


@pytest.mark.parametrize(
    "override, message",
    [
        ("backend=azure", "azure"),
        ("min_accuracy=2", "min_accuracy"),
    ],
)
def test_bad_config_is_refused_before_anything_runs(workdir, override, message):
    result = snakemake(workdir, "-n", "deploy", "--configfile", "config/demo.yaml", "--config", override, check=False)
    assert result.returncode != 0 and message in result.stderr + result.stdout
    assert not (workdir / "results").exists()


@pytest.mark.parametrize("overlay", ["config/sagemaker.yaml", "config/local_container.yaml"])
def test_cloud_overlays_plan_without_touching_aws(workdir, overlay):
    """No credentials, no network: the plan is printed all the same."""
    env = {
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    }
    result = snakemake(workdir, "-n", "deploy", "--configfile", overlay, env=env)
    for rule in ("upload", "tune", "train", "start_endpoint", "evaluate"):
        assert re.search(rf"^{rule}\s+1$", result.stdout, re.MULTILINE), result.stdout


def test_the_sagemaker_backend_needs_an_s3_store(workdir):
    result = snakemake(
        workdir, "upload", "--configfile", "config/demo.yaml", "--config", "backend=sagemaker", check=False
    )
    assert result.returncode != 0 and "set store.uri to s3://bucket/prefix" in result.stdout + result.stderr


def test_the_schemas_hyperparameters_are_train_pys_own_flags():
    """One list of hyperparameters: the schema's, typed as train.py parses them."""
    import job_contract
    import train
    import yaml

    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())["$defs"]["hyperparameters"]
    elsewhere = {
        "arch",
        "weights",
        "image_size",  # model:
        "debug",
        "profile",
        "save_interval",
        "profiler_interval_ms",  # profiling:
        "train",
        "valid",
        "model_dir",
        "output_data_dir",
        "checkpoint_dir",
        "help",  # the training contract
        "expect_data",
    }  # the workflow's data check
    types = {
        float: "number",
        int: "integer",
        job_contract.to_bool: "boolean",
        str: "string",
        job_contract.amp_flag: ["string", "boolean"],
    }
    flags = {action.dest: action for action in train.build_parser()._actions if action.dest not in elsewhere}
    assert set(flags) == set(schema["properties"])
    for name, action in flags.items():
        assert schema["properties"][name]["type"] == types[action.type], name
        if action.choices:
            assert schema["properties"][name]["enum"] == list(action.choices), name
    with pytest.raises(SystemExit):  # no prefix matching: --epoch is not --epochs
        train.parse_args(["--epoch", "1"])


@pytest.mark.parametrize(
    "overlay, message",
    [
        ({"hyperparameters": {"epochs": "ten"}}, "hyperparameters.epochs: 'ten' is not of type 'integer'"),
        (
            {"hyperparameters": {"epoch": 1}},
            "hyperparameters.epoch is not a known setting; did you mean epochs?",
        ),
        (
            {"tuning": {"trial_hyperparameters": {"lr": -1}}},
            "tuning.trial_hyperparameters.lr: -1 is less than or equal to",
        ),
        (
            {"tuning": {"parameters": {"lr": {"type": "continuous", "min": 0.1, "max": 0.01}}}},
            "tuning.parameters.lr: min 0.1 must be below max 0.01",
        ),
        (
            {
                "tuning": {
                    "parameters": {"lr": {"type": "continuous", "min": -0.1, "max": 0.1, "scaling": "Logarithmic"}}
                }
            },
            "tuning.parameters.lr: Logarithmic scaling needs min > 0, got -0.1",
        ),
        (
            {"tuning": {"parameters": {"learning_rate": {"type": "continuous", "min": 0.01, "max": 0.1}}}},
            "tuning.parameters.learning_rate: learning_rate is not a hyperparameter of train.py",
        ),
        (
            {"model": {"arch": "resnet19"}},
            "config: model.arch: 'resnet19' is not a torchvision classification model; did you mean resnet18",
        ),
    ],
)
def test_a_config_mistake_is_refused_by_a_dry_run_naming_the_key(workdir, overlay, message):
    import yaml

    (workdir / "config/mistake.yaml").write_text(yaml.safe_dump(overlay))
    result = snakemake(workdir, "-n", "deploy", "--configfile", "config/demo.yaml", "config/mistake.yaml", check=False)
    assert result.returncode != 0 and message in result.stderr + result.stdout, result.stderr[-2000:]


def test_printed_commands_repeat_the_runs_options(monkeypatch):
    from dogbreed.runtime import run_options

    argv = [
        "snakemake",
        "--cores",
        "2",
        "deploy",
        "--configfile",
        "config/demo.yaml",
        "config/sagemaker.yaml",
        "--config",
        "results_dir=results-cloud",
        "confirm_cloud=true",
        "-n",
        "--config=min_accuracy=0.5",
    ]
    options = run_options.from_argv(argv)
    assert options == [
        "--configfile",
        "config/demo.yaml",
        "config/sagemaker.yaml",
        "--config",
        "results_dir=results-cloud",
        "confirm_cloud=true",
        "--config=min_accuracy=0.5",
    ]
    import shlex

    monkeypatch.setenv(run_options.ENV, shlex.join(options))
    assert run_options.command("teardown") == (
        "snakemake teardown --configfile config/demo.yaml config/sagemaker.yaml "
        "--config results_dir=results-cloud confirm_cloud=true --config=min_accuracy=0.5"
    )


def test_a_second_configfile_flag_is_refused_in_one_line(workdir):
    """Snakemake keeps only the last --configfile flag's files: the demo overlay would be dropped silently."""
    result = snakemake(
        workdir, "-n", "deploy", "--configfile", "config/demo.yaml", "--configfile", "config/laptop.yaml", check=False
    )
    said = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode == 1 and said[-1] == (
        "--configfile is given 2 times, and Snakemake would keep only the last one's files: give them all to one "
        "flag, later files winning: --configfile config/demo.yaml config/laptop.yaml"
    )
    assert not (workdir / "results-demo").exists() and not (workdir / "results").exists()


def test_config_mistakes_come_one_per_line_with_the_closest_key(workdir):
    result = snakemake(
        workdir,
        "-n",
        "deploy",
        "--configfile",
        "config/demo.yaml",
        "--config",
        "backendd=local",
        "modle=1",
        check=False,
    )
    said = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode == 1 and said[-2:] == [
        "config: backendd is not a known setting; did you mean backend?",
        "config: modle is not a known setting; did you mean model?",
    ]
    assert "Traceback" not in result.stderr and "File " not in result.stderr
