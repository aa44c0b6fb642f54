"""The model and its preprocessing, shared by train.py, feature_cache.py and inference.py.

One definition of the network, of its head and of the eval-time image transform, so training, feature
extraction, evaluation and serving cannot drift apart (the seed project normalised differently in each place).

Any classification model torchvision knows is a backbone (`torchvision.models.list_models`): built by name
(`get_model`), with its own ImageNet weights and their preprocessing (`get_model_weights(arch).DEFAULT`), and its
head — the model's last `nn.Linear`: ResNet's `fc`, `classifier[-1]`, ViT's `heads.head`, Swin's `head` — replaced
by a fresh one. `head_name` is the one place that knows where a model's head is: the frozen backbone, the
feature cache and the saved backbone all ask it.
"""

import difflib
import json
import os
from pathlib import Path

import torch
import torchvision
from torchvision import transforms

# ImageNet statistics: what torchvision's ImageNet weights expect (nearly all of them: the spec takes each
# model's own), and a sound default for a network trained from scratch on photos too.
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

MODEL_INFO_FILE = "model_info.json"
WEIGHTS_FILE = "model.pth"

# Networks built for one input size (their position embeddings, their attention grids): the constructor argument
# that sets it, by the module of torchvision that holds the model. They take exactly their weights' min_size.
FIXED_SIZE_ARGUMENT = {"vision_transformer": "image_size", "maxvit": "input_size"}
# Networks with auxiliary classifiers: built without them (in training mode they return a tuple of logits, and their
# heads are not the model's); torchvision drops them after loading the ImageNet weights.
AUXILIARY_LOGITS = ("inception_v3", "googlenet")
# Classification models whose output layer is not a last nn.Linear (SqueezeNet's is a 1×1 convolution followed by
# ReLU and pooling: the features before it are 13×13 maps, not a vector a head and a feature cache can take).
NO_LINEAR_HEAD = ("squeezenet1_0", "squeezenet1_1")


class WeightsUnavailable(RuntimeError):
    pass


def architectures() -> list:
    """The classification models this torchvision knows, less those without a linear head."""
    return sorted(
        name for name in torchvision.models.list_models(module=torchvision.models) if name not in NO_LINEAR_HEAD
    )


def check_arch(arch: str):
    """ValueError in one line, with the closest names, for a name that is not a backbone here."""
    if arch in NO_LINEAR_HEAD:
        raise ValueError(
            f"arch {arch!r} ends in a convolution, not a linear layer: no head to replace or features to cache; "
            f"choose another torchvision classifier (e.g. mobilenet_v3_small)"
        )
    known = architectures()
    if arch not in known:
        close = difflib.get_close_matches(arch, known, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"torchvision's classifiers: {', '.join(known)}"
        raise ValueError(f"unknown arch {arch!r}: not a torchvision classification model; {hint}")


def imagenet_weights(arch: str):
    """torchvision's default ImageNet weights of arch (their transforms and meta say what the network expects)."""
    return torchvision.models.get_model_weights(arch).DEFAULT


def _family(arch: str) -> str:
    return torchvision.models.get_model_builder(arch).__module__.rsplit(".", 1)[-1]


def input_size(arch: str) -> tuple:
    """(the smallest image side the network takes, whether it takes only that size): the ImageNet weights'
    min_size, exact for the networks built for one size (ViT, MaxViT)."""
    smallest = imagenet_weights(arch).meta["min_size"][0]
    return smallest, _family(arch) in FIXED_SIZE_ARGUMENT


def check_input_size(arch: str, image_size: int):
    """ValueError in one line when arch is not a backbone here (check_arch) or cannot take image_size × image_size
    images: the job's whole check of its backbone, before anything is built."""
    check_arch(arch)
    smallest, exact = input_size(arch)
    if exact and image_size != smallest:
        raise ValueError(f"{arch} takes {smallest}×{smallest} px images only: set model.image_size to {smallest}")
    if image_size < smallest:
        raise ValueError(f"{arch} takes images of at least {smallest} px: set model.image_size to {smallest} or more")


def _constructor_arguments(arch: str, weights) -> dict:
    arguments = {}
    if arch in AUXILIARY_LOGITS:
        # the ImageNet weights expect torchvision's own input transform, which it switches on with them: on always, so
        # the network is the same with or without them (training, the feature cache, serving)
        arguments["transform_input"] = True
        if weights is None:  # (with weights torchvision insists on building the auxiliary heads: dropped after)
            arguments["aux_logits"] = False
            arguments["init_weights"] = True  # torchvision's own initialisation (and no warning that it will change)
    if (size_argument := FIXED_SIZE_ARGUMENT.get(_family(arch))) is not None:
        # the same network with or without the weights: built for their size
        smallest = input_size(arch)[0]
        arguments[size_argument] = smallest if size_argument == "image_size" else (smallest, smallest)
    return arguments


def head_name(model: torch.nn.Module) -> str:
    """The dotted name of the model's output layer: its last nn.Linear (ResNet's `fc`, VGG, MobileNet,
    EfficientNet and ConvNeXt's `classifier.<last>`, DenseNet's `classifier`, ViT's `heads.head`, Swin's
    `head`); "" when the model is that layer itself (the head trained alone on cached features)."""
    names = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no linear layer to serve as its head")
    return names[-1]


def _set_submodule(model, name, module):
    parent, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent), attribute, module)


def replace_head(model: torch.nn.Module, num_classes: int) -> torch.nn.Module:
    """A fresh num_classes-way head in place of the model's own (in place; the model returned)."""
    name = head_name(model)
    head = model.get_submodule(name)
    _set_submodule(model, name, torch.nn.Linear(head.in_features, num_classes, bias=head.bias is not None))
    return model


def is_head_parameter(name: str, head: str) -> bool:
    """Whether the state-dict or parameter name belongs to the head called `head` (head_name)."""
    return name.startswith(head + ".")


def build_model(arch: str, num_classes: int, weights: str = "none") -> torch.nn.Module:
    """A torchvision classifier with a fresh `num_classes`-way head.

    weights: "imagenet" (torchvision's download, cached under $TORCH_HOME), "none" (random init),
    or a path to a state dict (an ImageNet checkpoint or one of our own model.pth files).
    """
    check_arch(arch)
    if weights == "imagenet":
        imagenet = imagenet_weights(arch)
        try:
            model = torchvision.models.get_model(arch, weights=imagenet, **_constructor_arguments(arch, imagenet))
        except (OSError, RuntimeError) as error:  # offline, proxy, corrupt cache: all end here
            cache = Path(torch.hub.get_dir()) / "checkpoints"
            raise WeightsUnavailable(
                f"could not get the ImageNet weights for {arch} ({error}). Either download "
                f"{imagenet.url} on a machine with internet and place it in {cache}/, "
                f"or set model.weights to the path of that file, or to 'none' to train from scratch."
            ) from error
        if arch in AUXILIARY_LOGITS:  # the auxiliary heads, as the network without weights is built
            model.aux_logits = False
            for auxiliary in ("AuxLogits", "aux1", "aux2"):
                if hasattr(model, auxiliary):
                    setattr(model, auxiliary, None)
    else:
        model = torchvision.models.get_model(arch, weights=None, **_constructor_arguments(arch, None))
        if weights not in ("none", "", None):
            path = Path(weights).expanduser()
            if not path.is_file():
                raise WeightsUnavailable(f"weights file {path} does not exist (model.weights in config)")
            state = torch.load(path, map_location="cpu", weights_only=True)
            # Keep only tensors whose shape fits: an ImageNet checkpoint's 1000-way head is dropped.
            own = model.state_dict()
            state = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
            model.load_state_dict(state, strict=False)
    return replace_head(model, num_classes)


def preprocessing_spec(image_size: int, resize: int = 0, arch: str = "resnet18") -> dict:
    """The eval transform's numbers: the shorter side resized to `resize` (0: image_size scaled as the arch's
    ImageNet weights scale their crop, 224 → 256 for ResNet18), the centre image_size crop, the weights' mean and
    std, and their interpolation where it is not bilinear (the spec of a bilinear model is as it always was)."""
    recipe = imagenet_weights(arch).transforms()
    resize = resize or round(image_size * recipe.resize_size[0] / recipe.crop_size[0])
    spec = {"resize": resize, "crop": image_size, "mean": list(recipe.mean), "std": list(recipe.std)}
    if recipe.interpolation != transforms.InterpolationMode.BILINEAR:
        spec["interpolation"] = recipe.interpolation.value
    return spec


def _interpolation(spec):
    return transforms.InterpolationMode(spec.get("interpolation", "bilinear"))


def eval_transform(spec: dict, on_device=False):
    """PIL image → normalised C×H×W float tensor: the only eval/serving preprocessing there is.

    on_device: stop at the resized, cropped uint8 tensor; `normalise` finishes it on the training
    device (a quarter of the bytes through the DataLoader and to the GPU, the arithmetic there).
    """
    steps = [transforms.Resize(spec["resize"], _interpolation(spec)), transforms.CenterCrop(spec["crop"])]
    return transforms.Compose(steps + _finish(spec, on_device))


def train_transform(spec: dict, on_device=False):
    steps = [
        transforms.RandomResizedCrop(spec["crop"], scale=(0.5, 1.0), interpolation=_interpolation(spec)),
        transforms.RandomHorizontalFlip(),
    ]
    return transforms.Compose(steps + _finish(spec, on_device))


def _finish(spec, on_device):
    if on_device:
        return [transforms.PILToTensor()]
    return [transforms.ToTensor(), transforms.Normalize(spec["mean"], spec["std"])]


def normalise(batch: torch.Tensor, spec: dict, channels_last=False) -> torch.Tensor:
    """A uint8 N×3×H×W batch (eval_transform(on_device=True)) → the float input eval_transform makes:
    the same numbers, ToTensor's /255 then Normalize, computed wherever the batch is."""
    mean = torch.tensor(spec["mean"], device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(spec["std"], device=batch.device).view(1, 3, 1, 1)
    batch = (batch.float() / 255 - mean) / std
    return batch.contiguous(memory_format=torch.channels_last) if channels_last else batch


def backbone_features(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """What the model's head sees: the output of everything before it (ResNet's pooled, flattened features)."""
    name = head_name(model)
    head = model.get_submodule(name)
    _set_submodule(model, name, torch.nn.Identity())
    try:
        return model(images)
    finally:
        _set_submodule(model, name, head)


def replace_head_with_identity(model: torch.nn.Module) -> torch.nn.Module:
    """The model less its head: its output is what the head would see (in place; the model returned)."""
    _set_submodule(model, head_name(model), torch.nn.Identity())
    return model


def backbone_state(model: torch.nn.Module) -> dict:
    """The model's weights less its head's: what the feature cache keeps beside the features."""
    head = head_name(model)
    return {k: v.cpu() for k, v in model.state_dict().items() if not is_head_parameter(k, head)}


def save_model(model_dir, model, arch, classes, spec):
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), model_dir / WEIGHTS_FILE)
    info = {"arch": arch, "num_classes": len(classes), "classes": classes, "preprocessing": spec}
    (model_dir / MODEL_INFO_FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False))


def load_model(model_dir, device="cpu"):
    model_dir = Path(model_dir)
    info = json.loads((model_dir / MODEL_INFO_FILE).read_text())
    model = build_model(info["arch"], info["num_classes"], weights="none")
    model.load_state_dict(torch.load(model_dir / WEIGHTS_FILE, map_location=device, weights_only=True))
    return model.to(device).eval(), info


def pick_device() -> torch.device:
    if torch.cuda.is_available() and os.environ.get("SM_NUM_GPUS", "1") != "0":
        return torch.device("cuda")
    return torch.device("cpu")
