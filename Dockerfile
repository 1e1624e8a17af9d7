# syntax=docker/dockerfile:1
# Cete image: `docker build -t cete .`, then for example
#   docker run --rm -p 7000:7000 -p 8000:8000 -p 9000:9000 cete start \
#     --id=node1 --bind-addr=:7000 --grpc-addr=:9000 --http-addr=:8000 --data-dir=/var/lib/cete/node1
# With no arguments the container runs `cete start --data-directory /var/lib/cete/data`.

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

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libstdc++6 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 1000 cete \
 && useradd --uid 1000 --gid cete --home-dir /var/lib/cete --no-create-home --shell /usr/sbin/nologin cete \
 && install -d -o cete -g cete -m 0750 /var/lib/cete
# `cete start` executes the cete-server found beside it.
COPY --from=builder /out/cete /out/cete-server /usr/local/bin/
COPY --chmod=0755 scripts/docker-entrypoint.sh /usr/local/bin/docker-entrypoint
USER cete
WORKDIR /var/lib/cete
VOLUME /var/lib/cete
# Raft, HTTP (REST API) and gRPC.
EXPOSE 7000 8000 9000
ENTRYPOINT ["docker-entrypoint"]
CMD ["start", "--data-directory", "/var/lib/cete/data"]
