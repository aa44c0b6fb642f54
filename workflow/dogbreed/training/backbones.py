"""The backbones model.arch may name, checked from the config alone: torchvision's classification models, the image
sizes each network takes, and the torchvision a framework image must carry for it.

The workflow imports no torch (torchvision's import alone costs seconds of every run), so this is a table;
tests/test_backbones.py checks it against the installed torchvision (scripts/classifier.py, which builds the models),
so an upgrade that adds a model or changes one's sizes fails there first. The jobs check the same in their own
torchvision (classifier.check_arch, check_input_size): a job run by hand, or in an image named in the config, refuses
what its torchvision cannot build, in one line.
"""

import difflib

# The first torchvision release with each model and its ImageNet weights, from torchvision's release notes ("0.8":
# that release or an earlier one). The jobs build models by name (get_model, get_model_weights: torchvision 0.14), so
# today an image with the jobs' torchvision has every model here; a model a later torchvision adds goes in with its
# release.
SINCE = {
    "0.8": (
        "alexnet densenet121 densenet161 densenet169 densenet201 googlenet inception_v3 mnasnet0_5 mnasnet1_0 "
        "mobilenet_v2 resnet18 resnet34 resnet50 resnet101 resnet152 resnext50_32x4d resnext101_32x8d "
        "shufflenet_v2_x0_5 shufflenet_v2_x1_0 squeezenet1_0 squeezenet1_1 vgg11 vgg11_bn vgg13 vgg13_bn vgg16 "
        "vgg16_bn vgg19 vgg19_bn wide_resnet50_2 wide_resnet101_2"
    ),
    "0.9": "mobilenet_v3_large mobilenet_v3_small",
    "0.11": (
        "efficientnet_b0 efficientnet_b1 efficientnet_b2 efficientnet_b3 efficientnet_b4 efficientnet_b5 "
        "efficientnet_b6 efficientnet_b7 regnet_x_400mf regnet_x_800mf regnet_x_1_6gf regnet_x_3_2gf regnet_x_8gf "
        "regnet_x_16gf regnet_x_32gf regnet_y_400mf regnet_y_800mf regnet_y_1_6gf regnet_y_3_2gf regnet_y_8gf "
        "regnet_y_16gf regnet_y_32gf"
    ),
    "0.12": "convnext_tiny convnext_small convnext_base convnext_large vit_b_16 vit_b_32 vit_l_16 vit_l_32",
    "0.13": (
        "efficientnet_v2_s efficientnet_v2_m efficientnet_v2_l mnasnet0_75 mnasnet1_3 regnet_y_128gf resnext101_64x4d "
        "shufflenet_v2_x1_5 shufflenet_v2_x2_0 swin_t swin_s swin_b vit_h_14"
    ),
    "0.14": "maxvit_t swin_v2_t swin_v2_s swin_v2_b",
}
JOBS_NEED = "0.14"  # torchvision.models.get_model / get_model_weights / list_models
# The smallest image side of each network over 1 px: its ImageNet weights' meta["min_size"].
MIN_SIZE = {
    **dict.fromkeys(("alexnet",), 63),
    **dict.fromkeys(("convnext_tiny", "convnext_small", "convnext_base", "convnext_large"), 32),
    **dict.fromkeys(("densenet121", "densenet161", "densenet169", "densenet201"), 29),
    **dict.fromkeys(("efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l"), 33),
    "googlenet": 15,
    "inception_v3": 75,
    **dict.fromkeys(("maxvit_t", "swin_t", "swin_s", "swin_b", "vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32"), 224),
    **dict.fromkeys(("swin_v2_t", "swin_v2_s", "swin_v2_b"), 256),
    "vit_h_14": 518,
    "squeezenet1_0": 21,
    "squeezenet1_1": 17,
    **dict.fromkeys(("vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"), 32),
}
# Networks built for one input size (ViT's position embeddings, MaxViT's attention grids): that size only.
EXACT_SIZE = ("maxvit_t", "vit_b_16", "vit_b_32", "vit_h_14", "vit_l_16", "vit_l_32")
# Classifiers without a last linear layer to replace (classifier.NO_LINEAR_HEAD).
NO_LINEAR_HEAD = ("squeezenet1_0", "squeezenet1_1")

RELEASE = {name: version for version, names in SINCE.items() for name in names.split()}
ARCHITECTURES = sorted(name for name in RELEASE if name not in NO_LINEAR_HEAD)


def _version(text) -> tuple:
    return tuple(int(part) for part in str(text).split(".")[:2])


def arch_problems(arch: str, image_size: int) -> list:
    """What is wrong with model.arch at model.image_size, one line each: an unknown name (with the closest ones),
    a classifier without a linear head, an image size the network cannot take."""
    if arch in NO_LINEAR_HEAD:
        return [
            (
                f"model.arch: {arch} ends in a convolution, not a linear layer: there is no head to replace and no "
                f"feature vector to cache; choose another torchvision classifier (mobilenet_v3_small is as small)"
            )
        ]
    if arch not in RELEASE:
        close = difflib.get_close_matches(arch, ARCHITECTURES, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"torchvision's are {', '.join(ARCHITECTURES)}"
        return [f"model.arch: {arch!r} is not a torchvision classification model; {hint}"]
    smallest = MIN_SIZE.get(arch, 1)
    if arch in EXACT_SIZE and image_size != smallest:
        return [
            (
                f"model.image_size is {image_size}, but {arch} takes {smallest}×{smallest} px images only (it is built "
                f"for that size): set model.image_size to {smallest}, or choose a convolutional arch"
            )
        ]
    if image_size < smallest:
        return [
            (
                f"model.image_size is {image_size}, but {arch} takes images of at least {smallest} px: set "
                f"model.image_size to {smallest} or more"
            )
        ]
    return []


def torchvision_of(framework_version) -> tuple:
    """The torchvision release paired with a PyTorch release (what AWS's PyTorch framework images carry):
    PyTorch 2.x with torchvision 0.(15+x), 1.x with 0.(x+1)."""
    major, minor = _version(framework_version)
    return (0, 15 + minor) if major == 2 else (0, minor + 1)


def image_problems(backend: str, settings: dict, arch: str) -> list:
    """The framework images a job or the endpoint runs in (local mode's and SageMaker's, from their PyTorch version)
    whose torchvision cannot build arch. An image named in the config (local mode's training_image,
    inference_image) is not known here: its job refuses an arch its torchvision lacks, in one line."""
    if backend == "local" or arch not in RELEASE:
        return []
    needed = max(_version(RELEASE[arch]), _version(JOBS_NEED))
    problems = []
    for scope, version_key in (("training", "framework_version"), ("inference", "inference_framework_version")):
        if settings.get(f"{scope}_image") or not settings.get(version_key):
            continue
        version = settings[version_key]
        try:
            carried = torchvision_of(version)
        except ValueError:
            continue  # not a version number: the SDK refuses it, in its own words
        if carried < needed:
            problems.append(
                f"model.arch {arch} needs torchvision {'.'.join(map(str, needed))} or later, and the PyTorch {version} "
                f"{scope} image (backends.{backend}.{version_key}) carries torchvision {'.'.join(map(str, carried))}: "
                f"raise {version_key}, or choose another arch"
            )
    return problems
