"""The inference image's entry point, as in AWS's PyTorch inference DLC: `serve` starts SageMaker's
PyTorch serving toolkit (TorchServe); anything else runs as a command."""

import shlex
import subprocess
import sys

if sys.argv[1:] == ["serve"]:
    from sagemaker_pytorch_serving_container import serving

    serving.main()  # returns when TorchServe ends; then the container exits (the DLC's sleeps on, hiding a crash)
else:
    subprocess.check_call(shlex.split(" ".join(sys.argv[1:])))
