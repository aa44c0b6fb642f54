"""The model and its preprocessing, shared by train.py and inference.py.

One definition of the network and of the eval-time image transform, so training, evaluation
and serving cannot drift apart (the seed project normalised differently in each place).
"""

import json
import os
from pathlib import Path

import torch
import torchvision
from torchvision import transforms

# ImageNet statistics: the pretrained backbone expects them, and they are a sound default
# for a network trained from scratch on photos too.
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

ARCHITECTURES = {
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (torchvision.models.resnet34, torchvision.models.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (torchvision.models.resnet50, torchvision.models.ResNet50_Weights.IMAGENET1K_V2),
}

MODEL_INFO_FILE = "model_info.json"
WEIGHTS_FILE = "model.pth"


class WeightsUnavailable(RuntimeError):
    pass


def build_model(arch: str, num_classes: int, weights: str = "none") -> torch.nn.Module:
    """A torchvision ResNet with a fresh `num_classes`-way head.

    weights: "imagenet" (torchvision's download, cached under $TORCH_HOME), "none" (random init),
    or a path to a state dict (an ImageNet checkpoint or one of our own model.pth files).
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    constructor, imagenet_weights = ARCHITECTURES[arch]
    if weights == "imagenet":
        try:
            model = constructor(weights=imagenet_weights)
        except Exception as error:  # offline, proxy, corrupt cache: all end here
            cache = Path(torch.hub.get_dir()) / "checkpoints"
            raise WeightsUnavailable(
                f"could not get the ImageNet weights for {arch} ({error}). Either download "
                f"{imagenet_weights.url} on a machine with internet and place it in {cache}/, "
                f"or set model.weights to the path of that file, or to 'none' to train from scratch."
            ) from error
    else:
        model = constructor(weights=None)
        if weights not in ("none", "", None):
            path = Path(weights).expanduser()
            if not path.is_file():
                raise WeightsUnavailable(f"weights file {path} does not exist (model.weights in config)")
            state = torch.load(path, map_location="cpu", weights_only=True)
            # Keep only tensors whose shape fits: an ImageNet checkpoint's 1000-way head is dropped.
            own = model.state_dict()
            state = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
            model.load_state_dict(state, strict=False)
    model.fc = torch.nn.Linear(model.fc.in_features, num_classes)
    return model


def preprocessing_spec(image_size: int, resize: int) -> dict:
    return {"resize": resize, "crop": image_size, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}


def eval_transform(spec: dict, on_device=False):
    """PIL image → normalised C×H×W float tensor: the only eval/serving preprocessing there is.

    on_device: stop at the resized, cropped uint8 tensor; `normalise` finishes it on the training
    device (a quarter of the bytes through the DataLoader and to the GPU, the arithmetic there).
    """
    steps = [transforms.Resize(spec["resize"]), transforms.CenterCrop(spec["crop"])]
    return transforms.Compose(steps + _finish(spec, on_device))


def train_transform(spec: dict, on_device=False):
    steps = [transforms.RandomResizedCrop(spec["crop"], scale=(0.5, 1.0)), transforms.RandomHorizontalFlip()]
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
    """What a ResNet's head sees: the pooled, flattened output of everything before `fc`."""
    head, model.fc = model.fc, torch.nn.Identity()
    try:
        return model(images)
    finally:
        model.fc = head


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
