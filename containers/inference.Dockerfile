# Stand-in for AWS's PyTorch inference DLC: TorchServe (Java) under SageMaker's inference toolkits.
# `serve` (what SageMaker and local mode run) starts TorchServe on port 8080 with the model in
# /opt/ml/model and its code/inference.py as the handler's model_fn/input_fn/predict_fn/output_fn.
ARG PYTHON_IMAGE
FROM ${PYTHON_IMAGE}
ARG WHEELS
# TorchServe's frontend is Java (the DLC ships OpenJDK 17 too)
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless >/dev/null \
    && rm -rf /var/lib/apt/lists/*
COPY requirements-inference.txt /tmp/requirements-inference.txt
RUN pip install --no-index --find-links ${WHEELS} -c ${WHEELS}inference-pins.txt -r /tmp/requirements-inference.txt
COPY dockerd-entrypoint.py /usr/local/bin/dockerd-entrypoint.py
ENV TEMP=/home/model-server/tmp
RUN useradd -m model-server && mkdir -p /home/model-server/tmp /opt/ml/model \
    && chown -R model-server /home/model-server /opt/ml/model
EXPOSE 8080 8081
ENTRYPOINT ["python", "/usr/local/bin/dockerd-entrypoint.py"]
CMD ["serve"]
