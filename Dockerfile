# syntax=docker/dockerfile:1
# flush-conntrack: one static binary and nothing else, non-root by default
# (the flush Job sets runAsUser: 0 and NET_ADMIN itself). The final stage is
# FROM scratch: the binary needs no libc, no shell and, in a cluster, no CA
# bundle (the API server's CA comes with the service account token). The
# test suite builds this same final stage without a Docker engine
# (testbed/src/image.rs reads it from this file) and runs it on a kubelet.
# Build: docker buildx build --platform linux/amd64,linux/arm64 -t IMAGE .
# Each platform builds natively (under emulation where needed): the musl
# target of its own architecture links a static binary with no C
# cross-toolchain for ring.

FROM rust:1.95-bookworm AS build
ARG TARGETARCH
WORKDIR /src
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools=1.2.3-1 \
    && rm -rf /var/lib/apt/lists/*
RUN case "${TARGETARCH}" in \
      amd64) echo x86_64-unknown-linux-musl > /target ;; \
      arm64) echo aarch64-unknown-linux-musl > /target ;; \
      *) echo "unsupported TARGETARCH ${TARGETARCH}" >&2; exit 1 ;; \
    esac \
    && rustup target add "$(cat /target)"
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY testbed/Cargo.toml testbed/Cargo.toml
COPY src src
COPY testbed/src testbed/src
# Cargo reads every target the manifest declares, even to build one.
COPY tests tests
COPY benches benches
COPY testbed/examples testbed/examples
RUN cargo build --release --locked --target "$(cat /target)" --bin flush-conntrack \
    && cp "target/$(cat /target)/release/flush-conntrack" /flush-conntrack

FROM scratch
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="flush-conntrack" \
      org.opencontainers.image.description="Deletes the stale conntrack entries that keep hostPort UDP flows pointed at a replaced pod" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /flush-conntrack /flush-conntrack
USER 65532:65532
ENTRYPOINT ["/flush-conntrack"]
