# syntax=docker/dockerfile:1
# audithound container image: the binary at /usr/local/bin/audithound, run as uid/gid 65532,
# working with a read-only root filesystem (only the state directory and /tmp are written).
#
#   docker build -t audithound:0.1.0 .
#   docker run --rm --read-only --tmpfs /tmp -v audithound-state:/var/lib/audithound \
#     -v "$PWD/audithound.toml:/etc/audithound/audithound.toml:ro" -p 8443:8443 -p 9090:9090 \
#     audithound:0.1.0
#
# The release build (fat LTO, one codegen unit) takes several minutes per core; the cache
# mounts below keep the crate registry and the target directory between builds (BuildKit, or
# buildah/podman 4+).

ARG RUST_VERSION=1

FROM rust:${RUST_VERSION}-bookworm AS build
# What the C parts need. rdkafka (feature `ssl`) builds librdkafka from its bundled source
# with librdkafka's own ./configure and make, not cmake (the cmake-build feature is off), and
# finds zlib and OpenSSL through pkg-config (both linked dynamically); zstd-sys and ring compile
# C with cc. The rust image already carries all of these: installing them states the requirement.
RUN apt-get update \
 && apt-get install -y --no-install-recommends make gcc g++ pkg-config zlib1g-dev libssl-dev binutils \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# --locked: build exactly Cargo.lock. The debug info of the release profile (debug = 1, kept for
# profiling) is stripped from the shipped binary; symbols stay, so backtraces keep their names.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin audithound \
 && objcopy --strip-debug target/release/audithound /usr/local/bin/audithound

# Runtime: Debian 12 slim rather than distroless/cc. The binary links libz.so.1 and OpenSSL's
# libssl.so.3/libcrypto.so.3 dynamically besides glibc and libgcc_s (ldd); distroless/cc ships
# no zlib, bookworm-slim has it and libssl3 is installed below, matching the build stage's
# glibc and OpenSSL. ca-certificates is the system trust store librdkafka's TLS uses; the HTTP
# sink trusts the Mozilla roots compiled in.
FROM debian:bookworm-slim

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="audithound" \
      org.opencontainers.image.description="Streaming analyzer for Kubernetes API-server audit logs: revoked credentials, privilege escalation, anomalous Secret access" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"

RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /etc/audithound /var/lib/audithound \
 && chown 65532:65532 /var/lib/audithound \
 && chmod 0750 /var/lib/audithound

COPY --from=build /usr/local/bin/audithound /usr/local/bin/audithound

# The state directory (state_dir: journal, checkpoints, snapshots, sink buffers) is the working
# directory, so relative paths in a configuration land on the writable volume.
WORKDIR /var/lib/audithound
USER 65532:65532
# 8443: the audit webhook (HTTPS, client certificates); 9090: /healthz, /readyz, /metrics (HTTP).
EXPOSE 8443 9090
# No HEALTHCHECK: Kubernetes ignores it and probes /healthz and /readyz on 9090 itself (see
# deploy/deployment.yaml), OCI-format images (buildah, podman) drop it, and the image has no
# HTTP client to run one with.
# checkov:skip=CKV_DOCKER_2:Kubernetes probes the ops port; see the comment above
ENTRYPOINT ["audithound"]
CMD ["run", "--config", "/etc/audithound/audithound.toml"]
