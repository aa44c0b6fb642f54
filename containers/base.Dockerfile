# The Python layer both stand-in images share: Debian 12's Python 3.11 in a venv, PyTorch and what
# scripts/requirements.txt lists. AWS's DLCs use Ubuntu, conda and Python 3.12 (docs/local-mode.md: the images).
# Wheels come from a wheelhouse the host filled with its own pip (containers/build.sh), served on
# 127.0.0.1 during the build: no index, certificate or credential enters the image.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
ARG WHEELS
LABEL org.dogbreed.stand-in=true
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
COPY requirements-base.txt /tmp/requirements-base.txt
RUN pip install --no-index --find-links ${WHEELS} -c ${WHEELS}base-pins.txt -r /tmp/requirements-base.txt
