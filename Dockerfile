# latentgram image: the CLI and the API over a run directory in /data.
#
#   docker build -t latentgram .                        # torch 2.13.0 from pip's default index
#   docker build -t latentgram --build-arg TORCH_INDEX_URL=URL .   # or from a PyTorch wheel index
#   docker run --rm -v latentgram-data:/data latentgram prepare --run /data/run
#   docker run --rm -v latentgram-data:/data -p 8000:8000 latentgram   # serves /data/run
#
# docker-compose.yml runs both steps; docs/deploy.md explains the build arguments and the GPU build.

ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim-bookworm

# Pinned as in the Makefile. An empty TORCH_INDEX_URL means plain `pip install torch==…`, which on
# x86-64 Linux is the CUDA build (large, and it also runs on CPUs); PyTorch's CPU wheel index gives
# a small CPU-only image, one of its CUDA indexes a build for a given CUDA version.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=
# Empty: no Spark. A Spark version (the cluster's) adds Java 17 and that pyspark, for
# `latentgram build --engine spark` and for running a Spark worker from this image.
ARG SPARK_VERSION=

# NUMBA_CACHE_DIR: the compiled exact search is cached in the volume, so only a container's
# first start compiles it.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NUMBA_CACHE_DIR=/data/.cache/numba \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# The default data source: Debian's Fashion-MNIST in /usr/share/datasets/fashion-mnist.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        dataset-fashion-mnist ${SPARK_VERSION:+openjdk-17-jre-headless procps} \
    && rm -rf /var/lib/apt/lists/*

# torch first, in its own layer: it is by far the largest and changes least often.
RUN pip install "torch==${TORCH_VERSION}" ${TORCH_INDEX_URL:+--index-url "${TORCH_INDEX_URL}"}

# A plain (non-editable) install: the SQL migrations ship inside the package (service/migrations
# links to migrations/, and the wheel carries copies), so the source copy is removed afterwards
# and the service cannot change its own code or migrations.
COPY . /tmp/latentgram
RUN pip install /tmp/latentgram ${SPARK_VERSION:+"pyspark==${SPARK_VERSION}"} \
    && rm -rf /tmp/latentgram

# Runs as an unprivileged user. /data is created here and owned by that user so that a new named
# volume mounted on it starts out writable by the user (Docker copies the ownership into it).
RUN useradd --create-home --uid 10001 --user-group latentgram \
    && mkdir -p /data \
    && chown latentgram:latentgram /data
USER latentgram
WORKDIR /data
VOLUME ["/data"]

EXPOSE 8000

# Liveness only (the process answers HTTP); python instead of curl, which the slim image lacks.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

ENTRYPOINT ["latentgram"]
CMD ["serve", "--run", "/data/run", "--host", "0.0.0.0", "--port", "8000"]
