"""The frozen backbone's extraction on the CPU, three runtimes side by side in one run (issue 28).

    PYTHONPATH=<onnxruntime and onnx> .venv/bin/python benchmarks/bench_extraction.py [--images 384] [--threads 2]

What scripts/feature_cache.py computes for every image (a uint8 batch normalised, then the backbone's pooled
features), timed with
- eager PyTorch as the job runs it today: channels_last, torch.inference_mode;
- torch.compile (Inductor) of the same backbone, as it comes and with Inductor's freezing (the weights as
  constants: BatchNorm folded into the convolutions, oneDNN's weights prepacked), its CPU inference setting;
- ONNX Runtime, CPU execution provider, on the backbone exported to ONNX (torch.onnx's TorchScript exporter,
  a dynamic batch axis; onnxruntime and onnx are not in requirements.txt: put them on PYTHONPATH).
Each runtime's set-up (compiling, or exporting and loading the session, with its first batches: a compiled
model compiles again for the last, smaller batch) is timed apart and counted against it over `--amortise-over`
images (7,515: the laptop rehearsal's extraction). The runtimes take turns, `--repeats` times over the same
`--images` images; the median pass counts (the machine may be shared). Then the features of the demo's test
set (60 generated images at the same size) from each runtime beside eager's: the largest absolute difference,
and whether a 133-way head (seeded) and the features themselves give the same argmax for every image.
A runtime is worth using when it is >= 1.5x eager's images/s with its set-up counted and the same argmax.
Numbers go into BENCHMARKS.md with the machine and date; nothing here is asserted.
"""

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
sys.path.insert(0, str(REPO / "scripts"))
import classifier
from dogbreed.data import demo_data
from image_folders import ImageFolderByNumber

WORTH = 1.5  # the bar: a runtime at least this much faster, its set-up counted


def backbone(arch: str) -> torch.nn.Module:
    """The frozen backbone as feature_cache.py runs it: eval mode, the head (classifier.head_name) replaced by its
    input."""
    model = classifier.build_model(arch, 133, "none")  # random weights: the same network, the same time
    return classifier.replace_head_with_identity(model).eval().to(memory_format=torch.channels_last)


def batches(images: torch.Tensor, batch_size: int):
    return [images[start : start + batch_size] for start in range(0, len(images), batch_size)]


class Eager:
    name = "eager (channels_last, inference_mode)"

    def __init__(self, model, spec, sizes):
        self.model, self.spec = model, spec
        for size in sizes:  # the first batches of each size (oneDNN's kernel choice)
            self(torch.zeros(size, 3, spec["crop"], spec["crop"], dtype=torch.uint8))

    def __call__(self, batch):
        with torch.inference_mode():
            return self.model(classifier.normalise(batch, self.spec, channels_last=True)).float()


class Compiled(Eager):
    name = "torch.compile (Inductor, default mode)"

    def __init__(self, model, spec, sizes):
        super().__init__(torch.compile(model), spec, sizes)  # compiles for each batch size it is first called with


class CompiledFrozen(Eager):
    name = "torch.compile, freezing (weights as constants, BatchNorm folded)"

    def __init__(self, model, spec, sizes):
        super().__init__(torch.compile(model, options={"freezing": True}), spec, sizes)


class OnnxRuntime:
    name = "ONNX Runtime (CPU execution provider)"

    def __init__(self, model, spec, sizes, threads=2, folder=None):
        import onnxruntime

        self.spec = spec
        path = Path(folder) / "backbone.onnx"
        example = torch.zeros(2, 3, spec["crop"], spec["crop"])
        torch.onnx.export(
            model,
            (example,),
            path,
            dynamo=False,  # the TorchScript exporter: no onnxscript needed
            input_names=["images"],
            output_names=["features"],
            dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
        )
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for size in sizes:
            self(torch.zeros(size, 3, spec["crop"], spec["crop"], dtype=torch.uint8))

    def __call__(self, batch):
        images = classifier.normalise(batch, self.spec).numpy()
        return torch.from_numpy(self.session.run(["features"], {"images": images})[0])


def demo_test_set(folder, image_size, arch) -> torch.Tensor:
    """The demo's 60 test images (6 classes x 10), as the job's eval transform makes them (uint8)."""
    root = demo_data.generate(folder, corrupt_file=False)
    spec = classifier.preprocessing_spec(image_size, 0, arch)
    dataset = ImageFolderByNumber(root / "test", classifier.eval_transform(spec, on_device=True))
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


def agreement(reference, features, head) -> tuple:
    """(largest absolute difference, images whose head argmax agrees, images whose feature argmax agrees)."""
    with torch.no_grad():
        reference, features = reference.clone(), features.clone()  # outside inference mode
        same_head = (head(reference).argmax(1) == head(features).argmax(1)).sum().item()
        same_feature = (reference.argmax(1) == features.argmax(1)).sum().item()
        return (reference - features).abs().max().item(), same_head, same_feature


def measure(runtimes, images, batch_size, repeats) -> dict:
    """{name: median seconds for one pass over images}, the runtimes taking turns."""
    seconds = {name: [] for name in runtimes}
    for _ in range(repeats):
        for name, run in runtimes.items():
            started = time.perf_counter()
            for batch in batches(images, batch_size):
                run(batch)
            seconds[name].append(time.perf_counter() - started)
    return {name: statistics.median(times) for name, times in seconds.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--images", type=int, default=384, help="images in each timed pass")
    parser.add_argument("--batch-size", type=int, default=64, help="feature_cache.py's default")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--amortise-over", type=int, default=7515, help="images the set-up is shared by")
    parser.add_argument("--runtimes", default="eager,compile,compile-frozen,onnx")
    args = parser.parse_args()
    # a cold compile, as a job's first: Inductor's caches (kept under /tmp by default) hold an earlier run's kernels
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-extraction-inductor-")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    spec = classifier.preprocessing_spec(args.image_size, 0, args.arch)
    model = backbone(args.arch)
    # the batch sizes the laptop rehearsal's extraction calls the backbone with: full ones and each channel's last
    sizes = sorted({args.batch_size, 6680 % args.batch_size or args.batch_size, 835 % args.batch_size})
    kinds = {"eager": Eager, "compile": Compiled, "compile-frozen": CompiledFrozen, "onnx": OnnxRuntime}
    with tempfile.TemporaryDirectory(prefix="bench-extraction-") as tmp:
        test = demo_test_set(f"{tmp}/demo", args.image_size, args.arch)
        runtimes, setup = {}, {}
        for key in args.runtimes.split(","):
            started = time.perf_counter()
            extra = {"threads": args.threads, "folder": tmp} if key == "onnx" else {}
            run = kinds[key](model, spec, sizes, **extra)
            setup[run.name] = time.perf_counter() - started
            runtimes[run.name] = run
        images = torch.cat([test] * (args.images // len(test) + 1))[: args.images]
        seconds = measure(runtimes, images, args.batch_size, args.repeats)
        head = torch.nn.Linear(model(torch.zeros(1, 3, 64, 64)).shape[1], 133)
        with torch.inference_mode():
            features = {
                name: torch.cat([run(b) for b in batches(test, args.batch_size)]) for name, run in runtimes.items()
            }
    print(
        f"machine: {platform.processor() or platform.machine()}, {args.threads} threads; torch {torch.__version__}; "
        f"{args.arch} at {args.image_size} px, batch {args.batch_size}, {args.images} images a pass, "
        f"median of {args.repeats} passes; set-up counted over {args.amortise_over:,} images\n"
    )
    print(
        "| runtime | set-up s | images/s | images/s, set-up counted | × eager | max abs diff | "
        "head argmax same | feature argmax same |\n|---|---|---|---|---|---|---|---|"
    )
    reference_name = next(iter(runtimes))
    reference_rate = None
    for name in runtimes:
        rate = args.images / seconds[name]
        counted = args.amortise_over / (setup[name] + args.amortise_over / rate)
        reference_rate = reference_rate or counted
        diff, same_head, same_feature = agreement(features[reference_name], features[name], head)
        print(
            f"| {name} | {setup[name]:.1f} | {rate:.1f} | {counted:.1f} | {counted / reference_rate:.2f} | "
            f"{diff:.2e} | {same_head}/{len(test)} | {same_feature}/{len(test)} |"
        )
    print(f"\nthe features' largest magnitude: {features[reference_name].abs().max().item():.3g}")
    print(f"worth using: >= {WORTH}× {reference_name} with the set-up counted and every argmax the same")


if __name__ == "__main__":
    main()
