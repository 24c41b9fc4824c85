# syntax=docker/dockerfile:1.7
# The `blixt` binary (controller, agent, standalone) in a small runtime image.
#
#   docker build -t blixt:dev .            # or: podman build / buildah bud / kaniko
#
# The BPF programs are compiled by build.rs with clang and embedded in the binary, so only the
# builder needs clang, llvm and libbpf-dev; protoc comes from the protoc-bin-vendored crate. The
# runtime image holds the binary and glibc/libgcc (what it links), nothing else: no shell,
# no package manager. See docs/deploy.md.

ARG RUST_VERSION=1.95
# Builder and runtime share the Debian release, so the binary's glibc matches. bookworm is what
# the project's CI machines run (clang 14 builds the BPF programs).
ARG DEBIAN_RELEASE=bookworm

FROM docker.io/library/rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends clang llvm libbpf-dev linux-libc-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what the build reads (no target/, bench results or docs in the context layers).
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY examples examples
COPY tests tests
# Release build without the debug info of the release profile (symbols stay for backtraces).
ENV CARGO_PROFILE_RELEASE_DEBUG=0
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p blixt \
    && install -D -m 0755 target/release/blixt /out/blixt

# distroless/cc: glibc, libgcc, CA certificates, a nonroot user (65532); Debian 12 = bookworm.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/blixt /usr/local/bin/blixt
# The controller runs as this user; the agent's pod spec sets runAsUser 0 (see the chart).
USER 65532:65532
EXPOSE 9443 9464
ENTRYPOINT ["/usr/local/bin/blixt"]
