# syntax=docker/dockerfile:1
# tpserve container image. One Dockerfile, two variants chosen by a build argument:
#
#   docker build -t tpserve:cpu .                          CPU backend only, no CUDA anywhere
#   docker build -t tpserve:gpu --build-arg VARIANT=gpu .  CUDA backend (falls back to the CPU one
#                                                          when the container sees no GPU)
#   docker run --gpus all -p 50051:50051 -p 9090:9090 -v tpserve-models:/models tpserve:gpu
#
# Stages: a builder (compilers, -dev packages, and for the GPU variant nvcc from CUDA 13) and a
# small runtime (Debian 12 shared libraries, the binaries, libcudart for the GPU variant; no
# compilers). The node's CUDA driver comes from the NVIDIA container toolkit (`--gpus all`, or
# `nvidia.com/gpu` on Kubernetes). tpserve links only libcudart (its kernels use no cuBLAS).
#
# Without a registry (the development machines), deploy/local-base-images.sh makes `debian:12` and
# a CUDA builder base from the machine's toolkit; then build with
#   --build-arg VARIANT=gpu --build-arg BUILDER_BASE=localhost/tpserve-cuda-devel:13

# cpu | gpu
ARG VARIANT=cpu
# The builder's base: Debian 12. For the GPU variant an image that already has nvcc in
# /usr/local/cuda may be given (deploy/local-base-images.sh makes one); otherwise the builder
# installs CUDA 13 from NVIDIA's Debian 12 apt repository.
ARG BUILDER_BASE=debian:12

# ---- builder ----
# hadolint ignore=DL3006
FROM ${BUILDER_BASE} AS builder
ARG VARIANT
ARG CUDA_APT_VERSION=13-0
# Hopper (sm_90a) plus Ampere SASS; the kernels need sm_80 or newer.
ARG CUDA_ARCHITECTURES=90a;80
ARG BUILD_JOBS=2
# More targets to build, e.g. "cuda_backend_test tp-bench" (needs BUILD_TESTS=ON for the test);
# they land in /opt/tpserve/extra of the runtime image (empty by default) for test runs on a GPU node.
ARG EXTRA_TARGETS=""
ARG BUILD_TESTS=OFF
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
# The packages change less often than the sources: their own layer.
COPY tools/install-deps.sh tools/
# hadolint ignore=DL3008
RUN if [ "$VARIANT" = gpu ] && [ ! -x /usr/local/cuda/bin/nvcc ]; then \
      apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ca-certificates curl \
      && curl -fsSLo /tmp/cuda-keyring.deb \
           https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/cuda-keyring_1.1-1_all.deb \
      && dpkg -i /tmp/cuda-keyring.deb && rm /tmp/cuda-keyring.deb && apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
           "cuda-nvcc-${CUDA_APT_VERSION}" "cuda-cudart-dev-${CUDA_APT_VERSION}" \
      && ln -sfn "/usr/local/cuda-${CUDA_APT_VERSION/-/.}" /usr/local/cuda; \
    fi \
 && TPSERVE_DEPS=build tools/install-deps.sh
COPY . .
# Debian 12's CMake 3.25.1 FindCUDAToolkit fails on toolkits without libnvToolsExt (CUDA 12.9+):
# it sets a property on CUDA::nvToolsExt without checking that the target exists. The guard below
# is CMake 3.25.2's fix.
RUN cuda_flags=(); \
    if [ "$VARIANT" = gpu ]; then \
      sed -i 's/^    if(CMAKE_MINIMUM_REQUIRED_VERSION VERSION_GREATER_EQUAL 3.25)$/    if(TARGET CUDA::nvToolsExt AND CMAKE_MINIMUM_REQUIRED_VERSION VERSION_GREATER_EQUAL 3.25)/' \
        /usr/share/cmake-3.25/Modules/FindCUDAToolkit.cmake; \
      cuda_flags=(-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc "-DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCHITECTURES"); \
    elif [ "$VARIANT" != cpu ]; then \
      echo "VARIANT: expected cpu or gpu, got '$VARIANT'" >&2; exit 2; \
    fi; \
    cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release "-DTPSERVE_BUILD_TESTS=$BUILD_TESTS" "${cuda_flags[@]}" \
    && read -r -a extra <<<"$EXTRA_TARGETS" \
    && cmake --build /build -j "$BUILD_JOBS" --target tpserve tpctl tp-load "${extra[@]}"
# /out is what the runtime stage takes: stripped binaries, libcudart (GPU), and the Debian packages
# that provide every other shared library the binaries load (found with ldd + dpkg -S).
RUN mkdir -p /out/bin /out/lib /out/extra \
 && install -s -m 0755 /build/bin/tpserve /build/bin/tpctl /build/bin/tp-load /out/bin/ \
 && for t in $EXTRA_TARGETS; do install -s -m 0755 "/build/bin/$t" /out/extra/; done \
 && if [ "$VARIANT" = gpu ]; then \
      ldd /out/bin/tpserve | grep 'libcudart\.so' >/dev/null || { echo "GPU variant built without CUDA" >&2; exit 1; }; \
      cp -a /usr/local/cuda/lib64/libcudart.so.* /out/lib/; \
    fi \
 && for bin in /out/bin/* /out/extra/*; do if [ -f "$bin" ]; then ldd "$bin"; fi; done | awk '$3 ~ /^\// {print $3}' | sort -u | grep -v '/usr/local/cuda' \
    | while read -r lib; do \
        real=$(readlink -f "$lib"); \
        dpkg -S "$real" 2>/dev/null || dpkg -S "/usr$real" 2>/dev/null || dpkg -S "${real#/usr}" \
          || { echo "no Debian package provides $lib" >&2; exit 1; }; \
      done | cut -d: -f1 | sort -u >/out/runtime-packages \
 && cat /out/runtime-packages

# ---- runtime ----
FROM debian:12 AS runtime
ARG VARIANT
ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="tpserve" \
      org.opencontainers.image.description="gRPC service for e3nn-style equivariant tensor products ($VARIANT)" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$REVISION" \
      org.opencontainers.image.source="$SOURCE" \
      org.opencontainers.image.created="$CREATED" \
      io.tpserve.variant="$VARIANT"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY --from=builder /out/runtime-packages /tmp/runtime-packages
COPY --from=builder /out/lib/ /usr/local/lib/
# hadolint ignore=DL3008
RUN apt-get update -qq \
 && xargs -a /tmp/runtime-packages env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /tmp/runtime-packages \
 && ldconfig \
 && groupadd --system --gid 10001 tpserve \
 && useradd --system --uid 10001 --gid tpserve --home-dir /models --no-create-home --shell /usr/sbin/nologin tpserve \
 && mkdir -p /models && chown tpserve:tpserve /models
COPY --from=builder /out/bin/ /usr/local/bin/
COPY --from=builder /out/extra/ /opt/tpserve/extra/
# The NVIDIA container toolkit mounts the driver's compute libraries only when asked for them.
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
WORKDIR /models
# The model repository: created, updated and deleted models survive restarts on this volume.
VOLUME ["/models"]
# gRPC (tp.v1, grpc.health.v1, reflection) and Prometheus /metrics.
EXPOSE 50051 9090
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/tpctl", "health", "--server", "127.0.0.1:50051", "--timeout", "3"]
# SIGTERM: health turns NOT_SERVING, new calls are refused and calls in flight get
# --shutdown_grace_seconds (30) to finish; give `docker stop -t` / terminationGracePeriodSeconds more.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tpserve", "--model_dir=/models"]
CMD []
