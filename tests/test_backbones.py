"""Any torchvision classifier as the backbone (issue 28): the name and the image size checked from the config, the
framework images' torchvision, the head found and replaced in one place, and the frozen backbone, the feature cache
and serving for networks whose head is not ResNet's `fc`."""

import contextlib
import io
import json

import classifier
import feature_cache
import image_folders
import inference
import pytest
import torch
import torchvision
import yaml
from conftest import REPO, full_config, merged
from dogbreed.runtime import run_plan
from dogbreed.runtime.config import ConfigError, check_config
from dogbreed.training import backbones

SCHEMA = REPO / "workflow/schemas/config.schema.yaml"


def test_the_workflows_table_is_the_installed_torchvisions():
    """The workflow checks names and sizes without importing torch: its table must say what torchvision says (a
    torchvision that adds a model or changes one's sizes fails here, naming it)."""
    known = torchvision.models.list_models(module=torchvision.models)
    assert sorted(backbones.RELEASE) == sorted(known)
    assert backbones.ARCHITECTURES == classifier.architectures()
    assert backbones.NO_LINEAR_HEAD == classifier.NO_LINEAR_HEAD
    for arch in known:
        smallest = classifier.imagenet_weights(arch).meta["min_size"][0]
        assert backbones.MIN_SIZE.get(arch, 1) == smallest, arch
    for arch in backbones.ARCHITECTURES:
        assert classifier.input_size(arch) == (backbones.MIN_SIZE.get(arch, 1), arch in backbones.EXACT_SIZE), arch


def checked(model: dict):
    config = merged(yaml.safe_load((REPO / "config.yaml").read_text()), {"model": model})
    return check_config(config, SCHEMA)


@pytest.mark.parametrize(
    "arch, closest",
    [("resnet19", "resnet18"), ("mobilenet_v3_larg", "mobilenet_v3_large"), ("vit_b16", "vit_b_16")],
)
def test_an_unknown_arch_is_refused_with_the_closest_names(arch, closest):
    with pytest.raises(ConfigError) as refused:
        checked({"arch": arch})
    said = str(refused.value)
    assert said.startswith(f"config: model.arch: {arch!r} is not a torchvision classification model; did you mean ")
    assert closest in said and "\n" not in said
    with pytest.raises(ValueError, match=rf"unknown arch '{arch}'.*did you mean .*{closest}"):
        classifier.check_arch(arch)  # the job's own check, in its image's torchvision


@pytest.mark.parametrize(
    "arch, image_size, refusal",
    [
        ("vit_b_16", 64, "model.image_size is 64, but vit_b_16 takes 224×224 px images only"),
        ("vit_b_16", 256, "vit_b_16 takes 224×224 px images only"),
        ("maxvit_t", 128, "maxvit_t takes 224×224 px images only"),
        ("swin_t", 128, "model.image_size is 128, but swin_t takes images of at least 224 px"),
        ("swin_v2_t", 224, "swin_v2_t takes images of at least 256 px"),
        ("inception_v3", 64, "inception_v3 takes images of at least 75 px"),
        ("squeezenet1_1", 224, "squeezenet1_1 ends in a convolution, not a linear layer"),
        ("vit_b_16", 224, None),
        ("swin_t", 256, None),
        ("inception_v3", 75, None),
        ("efficientnet_b0", 64, None),
        ("mobilenet_v3_large", 32, None),
    ],
)
def test_an_image_size_the_network_cannot_take_is_refused(arch, image_size, refusal):
    if refusal is None:
        checked({"arch": arch, "image_size": image_size})
        if arch not in backbones.NO_LINEAR_HEAD:
            classifier.check_input_size(arch, image_size)
        return
    with pytest.raises(ConfigError, match=refusal):
        checked({"arch": arch, "image_size": image_size})
    if arch not in backbones.NO_LINEAR_HEAD:
        with pytest.raises(ValueError):
            classifier.check_input_size(arch, image_size)


def test_a_framework_image_whose_torchvision_lacks_the_arch_is_refused():
    assert backbones.torchvision_of("2.8") == (0, 23) and backbones.torchvision_of("2.6.0") == (0, 21)
    assert backbones.torchvision_of("1.13.1") == (0, 14) and backbones.torchvision_of("1.12") == (0, 13)
    old = {"framework_version": "1.12", "inference_framework_version": "2.6"}
    [problem] = backbones.image_problems("sagemaker", old, "swin_v2_t")
    assert problem == (
        "model.arch swin_v2_t needs torchvision 0.14 or later, and the PyTorch 1.12 training image "
        "(backends.sagemaker.framework_version) carries torchvision 0.13: raise framework_version, or choose another arch"
    )
    # an image named in the config is not known here (its job refuses what it cannot build); the local backend has none
    named = {**old, "training_image": "my/image:1"}
    assert backbones.image_problems("local_container", named, "swin_v2_t") == []
    assert backbones.image_problems("local", old, "swin_v2_t") == []
    # the shipped framework versions carry every backbone
    defaults = full_config()["backends"]
    for backend in ("sagemaker", "local_container"):
        assert not [a for a in backbones.ARCHITECTURES if backbones.image_problems(backend, defaults[backend], a)]
    # the run plan says it, with the run's other refusals
    config = full_config(
        {
            "backend": "sagemaker",
            "model": {"arch": "maxvit_t"},
            "backends": {"sagemaker": {"framework_version": "1.12"}},
        }
    )
    assert any("model.arch maxvit_t needs torchvision 0.14" in line for line in run_plan.refusals(config))


@pytest.mark.parametrize(
    "arch, size, head",
    [
        ("resnet18", 32, "fc"),
        ("mobilenet_v3_small", 32, "classifier.3"),
        ("efficientnet_b0", 32, "classifier.1"),
        ("convnext_tiny", 32, "classifier.2"),
        ("densenet121", 32, "classifier"),
        ("inception_v3", 75, "fc"),
        ("vit_b_32", 224, "heads.head"),
        ("swin_t", 224, "head"),
    ],
)
def test_the_head_is_found_and_replaced_in_one_place(arch, size, head):
    torch.manual_seed(0)
    model = classifier.build_model(arch, 3, "none")
    assert classifier.head_name(model) == head and model.get_submodule(head).out_features == 3
    images = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert model.train()(images).shape == (2, 3)  # a tensor: inception's auxiliary logits are off
        model.eval()
        features = classifier.backbone_features(model, images)
        assert features.shape == (2, model.get_submodule(head).in_features)
        assert torch.allclose(model.get_submodule(head)(features), model(images), atol=1e-5)
    assert classifier.head_name(model) == head  # the head is back in its place
    kept = classifier.backbone_state(model)
    assert set(model.state_dict()) - set(kept) == {f"{head}.weight", f"{head}.bias"}


def test_every_classifier_torchvision_has_its_head_found_but_squeezenet():
    """head_name on every classification model torchvision lists (built on the meta device: no memory, no weights),
    as docs/architecture.md says: the layer it names makes the model's 1000 ImageNet classes."""
    for arch in torchvision.models.list_models(module=torchvision.models):
        if arch.startswith("squeezenet"):
            continue  # its output layer is a convolution: refused (test_an_unknown_arch…)
        if arch.startswith("regnet"):  # RegNet's initialisation copies numbers (not on meta): its smallest two, built
            if not arch.endswith("400mf"):  # on the CPU, stand for the family (one class, RegNet, its head `fc`)
                continue
            model = torchvision.models.get_model(arch, weights=None)
        else:
            with torch.device("meta"):
                model = torchvision.models.get_model(arch, weights=None)
        assert model.get_submodule(classifier.head_name(model)).out_features == 1000, arch


@pytest.mark.parametrize("arch", ["inception_v3", "googlenet"])
def test_a_network_with_auxiliary_heads_is_the_same_with_imagenet_weights_or_without(arch, monkeypatch):
    """torchvision builds inception_v3 and googlenet with their auxiliary heads and input transform when it loads
    their ImageNet weights: the workflow's network is the same either way, so a model trained from those weights
    loads where it is served (built without them). The download is stood in for by the network's own state."""
    pretrained = torchvision.models.get_model(arch, weights=None, aux_logits=True, init_weights=False).state_dict()
    monkeypatch.setattr(torchvision.models._api.WeightsEnum, "get_state_dict", lambda self, **kwargs: pretrained)
    with_weights = classifier.build_model(arch, 5, "imagenet")
    without = classifier.build_model(arch, 5, "none")
    assert with_weights.transform_input and without.transform_input and not with_weights.aux_logits
    assert with_weights.state_dict().keys() == without.state_dict().keys()
    without.load_state_dict(with_weights.state_dict())  # what serving does with the trained weights
    assert classifier.head_name(with_weights) == "fc"


def test_resnet18_is_the_network_it_always_was():
    """The same seed, the same weights and preprocessing as torchvision.models.resnet18 with a new fc: the demo's
    numbers do not move."""
    torch.manual_seed(0)
    ours = classifier.build_model("resnet18", 6, "none")
    torch.manual_seed(0)
    theirs = torchvision.models.resnet18(weights=None)
    theirs.fc = torch.nn.Linear(512, 6)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))
    assert classifier.preprocessing_spec(64, 0, "resnet18") == {
        "resize": 73,
        "crop": 64,
        "mean": classifier.IMAGENET_MEAN,
        "std": classifier.IMAGENET_STD,
    }
    # another arch's own recipe: EfficientNet-B0's 256/224 resize and bicubic interpolation, into the served spec
    assert classifier.preprocessing_spec(224, 0, "efficientnet_b0")["interpolation"] == "bicubic"
    assert classifier.preprocessing_spec(224, 0, "convnext_tiny")["resize"] == 236


def run(main, argv) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(argv)
    return out.getvalue()


def job_args(channels, arch):
    return [
        *("--arch", arch, "--weights", "none", "--image_size", "32", "--augment", "false", "--num_workers", "0"),
        *("--train", str(channels / "train"), "--valid", str(channels / "valid")),
    ]


def train_args(train_dir, valid_dir, folder, arch, *flags):
    return [
        *("--arch", arch, "--weights", "none", "--image_size", "32", "--augment", "false", "--num_workers", "0"),
        *("--epochs", "2", "--batch_size", "8", "--lr", "0.05", "--freeze_backbone", "true"),
        *("--train", str(train_dir), "--valid", str(valid_dir)),
        *("--model_dir", str(folder / "model"), "--output_data_dir", str(folder / "output")),
        *("--checkpoint_dir", str(folder / "ckpt"), *flags),
    ]


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "efficientnet_b0"])
def test_the_frozen_backbone_the_feature_cache_and_serving_take_other_heads(arch, tiny_channels, tmp_path):
    """MobileNetV3's head is classifier[3] after a linear layer and dropout, EfficientNet's classifier[1] after
    dropout (and bicubic preprocessing): a frozen backbone trained on the images and its head trained on the cached
    features are the same model, and the endpoint serves it."""
    import train

    channels, _ = tiny_channels
    cache = tmp_path / "cache"
    run(feature_cache.main, [*job_args(channels, arch), "--model_dir", str(cache)])
    torch.manual_seed(0)  # as the jobs (--seed 0) before they build theirs
    fresh = classifier.build_model(arch, 3, "none")
    head = classifier.head_name(fresh)
    info = json.loads((cache / "train/features.json").read_text())
    assert info["arch"] == arch and info["dim"] == fresh.get_submodule(head).in_features
    on_images = tmp_path / "images"
    run(train.main, train_args(channels / "train", channels / "valid", on_images, arch))
    on_features = tmp_path / "features"
    # the head alone, with the recording on (the debug record watches the head, the profiler the steps)
    log = run(
        train.main,
        train_args(cache / "train", cache / "valid", on_features, arch, "--debug", "true", "--profile", "true"),
    )
    assert "the head on cached backbone features" in log
    a = torch.load(on_images / "model/model.pth", weights_only=True)
    b = torch.load(on_features / "model/model.pth", weights_only=True)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name].float(), b[name].float(), atol=1e-4), name
    fresh = fresh.state_dict()
    moved = [name for name in a if not torch.equal(a[name], fresh[name])]
    assert moved and all(classifier.is_head_parameter(name, head) for name in moved)  # BatchNorm kept its statistics

    served = inference.model_fn(str(on_features / "model"))
    assert served["info"]["preprocessing"] == classifier.preprocessing_spec(32, 0, arch)
    image = next(path for path in (channels / "valid").rglob("*") if path.is_file()).read_bytes()
    answer = json.loads(inference.output_fn(inference.predict_fn(inference.input_fn(image, "image/jpeg"), served))[0])
    assert len(answer["predictions"]) == 1 and answer["predictions"][0][0]["breed"]
    dataset = image_folders.ImageFolderByNumber(
        channels / "valid", classifier.eval_transform(served["info"]["preprocessing"])
    )
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    model = served["model"]
    with torch.no_grad():
        cached = feature_cache.CachedFeatures(cache / "valid").features[0]
        assert torch.allclose(model(images), model.get_submodule(head)(cached), atol=1e-4)


def test_a_job_refuses_an_arch_or_size_its_torchvision_cannot_take_in_one_line(tiny_channels, tmp_path, capsys):
    import train

    channels, _ = tiny_channels
    for arch, size, said in (("resnet19", "32", "did you mean resnet18"), ("vit_b_16", "64", "224×224 px images only")):
        argv = train_args(channels / "train", channels / "valid", tmp_path, arch)
        argv[argv.index("--image_size") + 1] = size
        with pytest.raises(SystemExit):
            train.main(argv)
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err
