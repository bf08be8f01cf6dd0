# The caffe-toolkit on Debian 13 for any machine with Docker or Podman (macOS, Windows, any Linux), CPU.
# It installs the bvlc-caffe wheel for Python 3.13 from dist/ (`make wheel`, or the wheel your course
# staff handed out, copied into dist/), so nothing is compiled here. Build and use (README, "Container"):
#
#   docker build -t caffe-toolkit .                          # runs `make test` inside (RUN_TESTS=0 skips it)
#   docker run --rm -v "$PWD":/work caffe-toolkit make q1    # on your clone's files, results/ included
#
# Proven on the project's machines with `make container` (podman build --isolation chroot from a
# debootstrapped trixie base: Docker Hub is not reachable there).
FROM debian:trixie-slim

# Python 3.13, make, git; Graphviz for the net diagrams; Fashion-MNIST, the offline data set (both Debian's)
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       python3 python3-venv make git ca-certificates graphviz dataset-fashion-mnist \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 student \
    && mkdir -p /opt/caffe-toolkit /work && chown student:student /opt/caffe-toolkit /work

# make uses this environment wherever it runs (the Makefile's VENV), also on a clone mounted at /work;
# MPLCONFIGDIR: a writable place for matplotlib under any --user
ENV VENV=/opt/caffe-toolkit/venv MPLCONFIGDIR=/tmp/matplotlib PYTHONDONTWRITEBYTECODE=1

USER student
COPY --chown=student:student . /opt/caffe-toolkit/src
WORKDIR /opt/caffe-toolkit/src
RUN wheel=$(ls dist/bvlc_caffe-*-cp313-cp313-*.whl 2>/dev/null | sort -V | tail -1) \
    && if [ -z "$wheel" ]; then echo "no cp313 bvlc_caffe wheel in dist/: run 'make wheel' first" >&2; exit 1; fi \
    && make setup CAFFE_WHEEL="$wheel"

ARG RUN_TESTS=1
RUN if [ "$RUN_TESTS" = 1 ]; then make test && rm -rf results .pytest_cache; fi

WORKDIR /work
CMD ["make", "help"]
