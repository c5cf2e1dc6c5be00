# One image per service, from one Dockerfile:
#
#     docker build --build-arg SERVICE=order-service --build-arg PORT=8081 -t order-service .
#
# docker-compose.yml passes both arguments for each of the four services and
# for the console (SERVICE=console, PORT=9001).
#
# Stages: `chef` (toolchain and cargo-chef) → `planner` (the dependency recipe
# from the manifests) → `builder` (dependencies first, cached as a layer of
# their own until Cargo.toml or Cargo.lock change; then the service itself) →
# `runtime` (the binary on a slim Debian, as a non-root user).

# Debian 12 (bookworm) in both the build and the runtime image, so the binary
# finds the same glibc it was linked against. The toolchain must be at least
# the newest `rust-version` among the locked dependencies (checked by
# deploy-checks/tests/compose.rs).
ARG RUST_IMAGE=rust:1.93.0-slim-bookworm
ARG RUNTIME_IMAGE=debian:12.11-slim

FROM ${RUST_IMAGE} AS chef
# rdkafka builds librdkafka from source: a C toolchain, make, perl, pkg-config,
# the zlib headers and OpenSSL's (TLS and SASL/SCRAM; the same packages
# .ci/run installs).
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential perl pkg-config zlib1g-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*
# cargo-chef 0.1.78's own locked dependencies need Rust 1.88 or later.
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /build

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
ARG SERVICE
RUN test -n "${SERVICE}" || { echo "build with --build-arg SERVICE=<service>"; exit 1; }
COPY --from=planner /build/recipe.json recipe.json
RUN cargo chef cook --release --locked -p ${SERVICE} --recipe-path recipe.json
COPY . .
# The command CI runs for every service (.ci/run), so a green CI means this builds.
RUN cargo build --release --locked -p ${SERVICE}

FROM ${RUNTIME_IMAGE} AS runtime
ARG SERVICE
ARG PORT
# The binary links libz, OpenSSL's libssl and libcrypto, libgcc_s and glibc;
# zlib1g is part of every Debian image, installed here so that stays true;
# ca-certificates is the trust store KAFKA_SECURITY_PROTOCOL=ssl/sasl_ssl
# uses when KAFKA_SSL_CA_LOCATION is empty.
RUN test -n "${SERVICE}" && test -n "${PORT}" \
    && apt-get update \
    && apt-get install -y --no-install-recommends zlib1g libssl3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app
# One fixed path whatever the service, so ENTRYPOINT and HEALTHCHECK (which do
# not expand build arguments) name it directly.
COPY --from=builder /build/target/release/${SERVICE} /usr/local/bin/service
USER app:app
# The port the server listens on, the one exposed and the one the health check
# asks are the same value.
ENV PORT=${PORT}
EXPOSE ${PORT}
# `service healthcheck` asks this container's own /health/ready on $PORT
# (the same configuration the server reads): healthy while Postgres and Kafka
# answer. The start period covers the database connection retries at start-up.
HEALTHCHECK --interval=10s --timeout=5s --start-period=40s --retries=3 \
    CMD ["/usr/local/bin/service", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/service"]
