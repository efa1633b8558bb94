# syntax=docker/dockerfile:1
# flush-conntrack: one static binary and nothing else, non-root by default
# (the flush Job sets runAsUser: 0 and NET_ADMIN itself). The final stage is
# FROM scratch: the binary needs no libc, no shell and, in a cluster, no CA
# bundle (the API server's CA comes with the service account token).
#
# One recipe. The test suite carries out this file itself, without a Docker
# engine (testbed/src/recipe.rs): the build stage's COPY, ARG, ENV, WORKDIR
# and RUN lines, verbatim, in a scratch copy of the source on a Debian 12
# machine with the Rust named below, then the final stage with umoci
# (testbed/src/image.rs). The binary the real node, the VM and the
# benchmarks run is the one this stage builds; a change here that breaks the
# build fails a test.
#
# Build: SOURCE_DATE_EPOCH="$(git log -1 --format=%ct)" docker buildx build \
#          --platform linux/amd64,linux/arm64 \
#          --output type=image,name=IMAGE,push=true,rewrite-timestamp=true .
# (buildx passes SOURCE_DATE_EPOCH on to buildkit, which stamps the image
# and, with rewrite-timestamp, its files with it; the binary holds no time.)
# Each platform builds natively (under emulation where needed) for its own
# glibc target, linked statically (+crt-static): no cross C toolchain for
# ring, no musl target to install.

FROM rust:1.95.0-slim-bookworm AS build
ARG CARGO_AUDITABLE_VERSION=0.7.7
WORKDIR /src
# The dependency list, embedded in the binary where image scanners read it.
RUN cargo install --locked "cargo-auditable@${CARGO_AUDITABLE_VERSION}"
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY testbed/Cargo.toml testbed/Cargo.toml
COPY src src
COPY testbed/src testbed/src
# Cargo reads every target the manifest declares, even to build one.
COPY tests tests
COPY benches benches
COPY testbed/examples testbed/examples
# No path of the build machine in the binary: the source and cargo's home
# are renamed to fixed ones, so that two builds of one commit, anywhere,
# give the same bytes.
RUN target="$(uname -m)-unknown-linux-gnu" \
    && RUSTFLAGS="-C target-feature=+crt-static --remap-path-prefix=${PWD}=/src --remap-path-prefix=${CARGO_HOME:-${HOME}/.cargo}=/cargo" \
       cargo auditable build --release --locked --target "${target}" --bin flush-conntrack \
    && mkdir -p out \
    && cp "target/${target}/release/flush-conntrack" out/flush-conntrack

FROM scratch
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="flush-conntrack" \
      org.opencontainers.image.description="Deletes the stale conntrack entries that keep hostPort UDP flows pointed at a replaced pod" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /src/out/flush-conntrack /flush-conntrack
USER 65532:65532
ENTRYPOINT ["/flush-conntrack"]
