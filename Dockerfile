# vae-latent on a GPU server. Build: docker build -t vae-latent .
# Run:   docker run --gpus all --user "$(id -u):$(id -g)" -v $PWD/outputs:/app/outputs \
#          -v $PWD/data:/app/data vae-latent -m experiment=paper
# The official PyTorch CUDA runtime image brings torch and torchvision; pip keeps them.
FROM pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VAE_LATENT_DATA=/app/data \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /app

# The install is the README's non-editable `pip install` line (tests/test_scale.py checks).
COPY pyproject.toml README.md ./
COPY vae_latent/ vae_latent/
COPY conf/ conf/
# The local project, not a PyPI name: its pins live in pyproject.toml. (The pragma stands alone:
# hadolint 2.12 reads a comment after it as part of the rule list.)
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[sweep]"

# Runs write outputs/ (run and sweep dirs) and read data/ (datasets; downloads land there).
# A user for uid 1000 unless the base image has one already (Ubuntu 24.04 bases do).
RUN (id -u 1000 >/dev/null 2>&1 || useradd --create-home --uid 1000 vae) \
    && mkdir -p /app/outputs /app/data \
    && chown 1000:1000 /app/outputs /app/data
USER 1000:1000
VOLUME ["/app/outputs", "/app/data"]

ENTRYPOINT ["vae-latent"]
