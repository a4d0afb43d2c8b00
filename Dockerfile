# tpserve image for GPU nodes: Debian 12 userland with the CUDA toolkit's runtime libraries
# supplied by the node (NVIDIA container toolkit). Build stage compiles with Debian's packages;
# pass --build-arg CUDA=1 on a builder that has /usr/local/cuda to compile the CUDA backend.
FROM debian:12 AS build
WORKDIR /src
COPY . .
RUN tools/install-deps.sh && BUILD_DIR=/build tools/build.sh -DTPSERVE_BUILD_TESTS=OFF

FROM debian:12
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      libgrpc++1.51 libprotobuf32 libopenblas0-pthread libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 \
      libabsl20220623 ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /build/bin/ /usr/local/bin/
EXPOSE 50051 9464
VOLUME /models
ENTRYPOINT ["/usr/local/bin/tp-server", "--model_dir", "/models"]
