# syntax=docker/dockerfile:1
# Cete image. `docker build -t cete:0.1.0 .` compiles Cete in the builder stage, then for example
#   docker run --rm -p 8000:8000 cete:0.1.0 start --id=node1 --data-dir=/var/lib/cete/node1
# With no arguments the container runs `cete start --data-directory /var/lib/cete/data`.
#
# Stages: `builder` compiles; `runtime` (the default, last) is the image users get, with the
# builder's binaries; `prebuilt` is the same runtime with binaries built elsewhere on Debian 12
# (glibc 2.36), taken from `prebuilt/` in the build context. The image test uses it so that
# RocksDB is not compiled a second time inside the image:
#   docker build --target prebuilt CONTEXT   (CONTEXT holds this file's scripts/ and prebuilt/)

FROM rust:1-bookworm AS builder
# librocksdb-sys generates its bindings with bindgen, which needs libclang.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libclang-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the registry and compiled dependencies between builds; the
# binaries are copied out of the cached target dir in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --workspace --bins \
 && mkdir -p /out \
 && cp target/release/cete target/release/cete-server /out/ \
 && strip --strip-debug /out/cete /out/cete-server

# What both images share: the system, the user, the entrypoint.
FROM debian:bookworm-slim AS base
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libstdc++6 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 1000 cete \
 && useradd --uid 1000 --gid cete --home-dir /var/lib/cete --no-create-home --shell /usr/sbin/nologin cete \
 && install -d -o cete -g cete -m 0750 /var/lib/cete
COPY --chmod=0755 scripts/docker-entrypoint.sh /usr/local/bin/docker-entrypoint
# Numeric, so that Kubernetes' runAsNonRoot can check it without /etc/passwd.
USER 1000:1000
WORKDIR /var/lib/cete
VOLUME /var/lib/cete
# Raft, HTTP (REST API) and gRPC.
EXPOSE 7000 8000 9000
ENTRYPOINT ["docker-entrypoint"]
CMD ["start", "--data-directory", "/var/lib/cete/data"]

FROM base AS prebuilt
# `cete start` executes the cete-server found beside it.
COPY prebuilt/cete prebuilt/cete-server /usr/local/bin/

FROM base AS runtime
COPY --from=builder /out/cete /out/cete-server /usr/local/bin/
