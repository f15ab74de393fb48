# train:latest: run a Hydra experiment with the data and outputs mounted.
#
#   docker build -f dockerfiles/train.dockerfile -t train:latest .
#   docker run --rm --gpus all -e WANDB_API_KEY \
#       -v "$PWD/data:/app/data" -v "$PWD/outputs:/app/outputs" \
#       train:latest experiments=exp1 trainer=gpu
#
# Installs requirements.lock as is (CUDA torch: runs on a GPU when one is passed, else on the
# CPU), then the project editable in /app, so `conf/` sits where the entry point expects it.
# No data, outputs or keys are baked in: WANDB_API_KEY comes from the environment at run time.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE}
ARG PIP_CERT=
ARG PIP_FIND_LINKS=
ARG PIP_EXTRA_INDEX_URL=
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.lock /tmp/requirements.lock
RUN pip install -r /tmp/requirements.lock && rm /tmp/requirements.lock
RUN useradd --create-home --uid 1000 app
WORKDIR /app
COPY --chown=app:app pyproject.toml README.md ./
COPY --chown=app:app vae_cats ./vae_cats
COPY --chown=app:app conf ./conf
RUN pip install --no-deps -e . \
    && mkdir -p data outputs multirun && chown -R app:app /app
ENV PYTHONUNBUFFERED=1 \
    WANDB_CONFIG_DIR=/tmp/wandb-config \
    WANDB_CACHE_DIR=/tmp/wandb-cache
USER app
ENTRYPOINT ["python", "vae_cats/train_model.py"]
CMD ["experiments=demo"]
