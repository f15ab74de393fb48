# predict:latest: decode N(0, I) noise into cat faces with a trained checkpoint, on the CPU.
#
#   docker build -f dockerfiles/predict.dockerfile -t predict:latest .
#   docker run --rm -v "$PWD/models:/models" -v "$PWD/out:/out" predict:latest \
#       --model /models/best.ckpt --n 16 --out /out
#
# Slim on purpose: CPU-only torch from the PyTorch CPU index (no CUDA libraries, no nvidia-*
# packages), no torchvision, no training stack (Lightning, torchmetrics, torchdata, Hydra,
# OmegaConf) and no data-versioning tools; the package is installed (not a script copied),
# so its bundled sample and any shipped model travel with it.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
# Where the CPU torch comes from, and which build. Its dependencies come from the same index.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.14.1+cpu
# Optional pip settings for builds behind a TLS proxy or with local wheels; empty by default.
ARG PIP_CERT=
ARG PIP_FIND_LINKS=
ARG PIP_EXTRA_INDEX_URL=
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --index-url "$TORCH_INDEX_URL" "torch==$TORCH_VERSION"
COPY requirements.lock dockerfiles/predict-requirements.txt /tmp/req/
# The lock pins every other version; the CUDA torch stack it also pins is left out.
RUN grep -v -E '^(torch|torchvision|triton|nvidia-[a-z0-9-]+|cuda-[a-z-]+)==' \
        /tmp/req/requirements.lock > /tmp/req/constraints.txt \
    && pip install -r /tmp/req/predict-requirements.txt -c /tmp/req/constraints.txt
COPY pyproject.toml README.md /src/
COPY vae_cats /src/vae_cats
RUN pip install --no-deps /src \
    && python -c "import torch; assert torch.version.cuda is None, torch.version.cuda" \
    && if pip list 2>/dev/null | grep -i -E '^(nvidia-|triton|torchvision)'; then exit 1; fi \
    && find /opt/venv -name __pycache__ -prune -exec rm -rf {} +

FROM ${BASE_IMAGE}
RUN useradd --create-home --uid 1000 app && mkdir -p /out /models && chown app:app /out /models
COPY --from=build /opt/venv /opt/venv
# W&B logs offline under --out unless WANDB_API_KEY is passed (docker run -e WANDB_API_KEY);
# its config and cache go to /tmp so any --user works.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    WANDB_CONFIG_DIR=/tmp/wandb-config \
    WANDB_CACHE_DIR=/tmp/wandb-cache
USER app
WORKDIR /home/app
# `serve --model ...` runs the HTTP API on port 8000 (on every interface inside the container,
# so `docker run -p 8000:8000` reaches it); any other arguments go to the predict script.
ENV VAE_CATS_SERVE_HOST=0.0.0.0
EXPOSE 8000
ENTRYPOINT ["vae-cats-image"]
CMD ["--out", "/out"]
