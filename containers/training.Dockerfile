# Stand-in for AWS's PyTorch training DLC: SageMaker's training toolkit is the entry point (`train`),
# running the job's entry point from source_dir under the real training contract (/opt/ml/...).
ARG PYTHON_IMAGE
FROM ${PYTHON_IMAGE}
ARG WHEELS
COPY requirements-training.txt /tmp/requirements-training.txt
RUN pip install --no-index --find-links ${WHEELS} -c ${WHEELS}training-pins.txt -r /tmp/requirements-training.txt
# As in the DLC: the toolkit's `train` hands the job to the PyTorch layer (distribution, then the script).
ENV SAGEMAKER_TRAINING_MODULE=sagemaker_pytorch_container.training:main
WORKDIR /
CMD ["/bin/bash"]
