# syntax=docker/dockerfile:1
# One image holding both programs: `unisondb` (the database node) and `unisondb-operator`.
#   docker build -t ghcr.io/unisondb/unisondb:0.1.0 .
#   docker run --rm -p 4000-4002:4000-4002 ghcr.io/unisondb/unisondb:0.1.0 unisondb server --mode replicator
#   docker run --rm ghcr.io/unisondb/unisondb:0.1.0 unisondb-operator run
# The builder runs exactly scripts/build-release.sh's command (e2e/tests/dockerfile.rs checks it), then
# strips the binaries (debug line tables stay in host release builds, for profiling).
# The base images are build arguments: the public ones by default; the cluster test builds this file
# with buildah on bases made from Debian's packages (e2e/image/build.sh), since it reaches no registry.
# The runtime stage is kept to one fact per line (USER, ENV, EXPOSE, VOLUME, ENTRYPOINT, LABEL) so
# tests can parse it.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm
ARG BUILDER_IMAGE=rust:${RUST_VERSION}-${DEBIAN_RELEASE}
ARG RUNTIME_IMAGE=debian:${DEBIAN_RELEASE}-slim

FROM ${BUILDER_IMAGE} AS builder
WORKDIR /src
ENV CARGO_TERM_COLOR=never
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin unisondb --bin unisondb-operator && \
    mkdir -p /out && cp target/release/unisondb target/release/unisondb-operator /out/ && \
    strip /out/unisondb /out/unisondb-operator

FROM ${RUNTIME_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="unisondb"
LABEL org.opencontainers.image.description="UnisonDB node (unisondb) and Kubernetes operator (unisondb-operator)"
LABEL org.opencontainers.image.source="https://github.com/unisondb/unisondb-rs"
LABEL org.opencontainers.image.url="https://github.com/unisondb/unisondb-rs"
LABEL org.opencontainers.image.documentation="https://github.com/unisondb/unisondb-rs/blob/main/docs/KUBERNETES.md"
LABEL org.opencontainers.image.licenses="Apache-2.0"
LABEL org.opencontainers.image.vendor="UnisonDB"
LABEL org.opencontainers.image.version="${VERSION}"
LABEL org.opencontainers.image.revision="${REVISION}"
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates tini && rm -rf /var/lib/apt/lists/* && \
    groupadd --system --gid 65532 unisondb && \
    useradd --system --uid 65532 --gid 65532 --home-dir /var/lib/unisondb --no-create-home --shell /usr/sbin/nologin unisondb && \
    mkdir -p /var/lib/unisondb /etc/unisondb && chown 65532:65532 /var/lib/unisondb
COPY --from=builder /out/unisondb /usr/local/bin/unisondb
COPY --from=builder /out/unisondb-operator /usr/local/bin/unisondb-operator
COPY docker/entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV UNISONDB_SERVER_DATA_DIR=/var/lib/unisondb
ENV RUST_LOG=info
WORKDIR /var/lib/unisondb
VOLUME /var/lib/unisondb
EXPOSE 4000 4001 4002
USER 65532:65532
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/docker-entrypoint.sh"]
CMD ["unisondb", "server", "--mode", "replicator"]
