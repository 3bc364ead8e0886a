# syntax=docker/dockerfile:1
#
# lossd container image.
#
#   docker build -t lossd:0.1.0 .
#   docker run --rm -p 8080:8080 lossd:0.1.0
#
# Stages:
#   chef     Rust 1.95.0 (Debian 12) with cargo-chef 0.1.77 preinstalled.
#   planner  `cargo chef prepare`: reduces the workspace (root package `lossd` and member
#            `kernels/`) to recipe.json, i.e. the manifests, Cargo.lock and a skeleton of
#            every target, with no source code.
#   builder  `cargo chef cook` compiles every dependency from recipe.json alone. That layer
#            stays cached until a Cargo.toml or Cargo.lock changes, so editing src/ or
#            kernels/src/ only rebuilds the two workspace crates.
#   runtime  distroless cc (glibc + libgcc, matching the Debian 12 builder), no shell,
#            runs as the numeric non-root user 65532.

FROM lukemathwalker/cargo-chef:0.1.77-rust-1.95.0-slim-bookworm AS chef
WORKDIR /app

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
# Dependencies only, with the same profile and package selection as the real build below
# (default-members: `.` and `kernels`), so the cached artifacts are reused.
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
# The Swagger UI assets come from the `vendored` feature of utoipa-swagger-ui: no download.
RUN cargo build --release --locked

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=builder /app/target/release/lossd /usr/local/bin/lossd
# Containers must listen on every interface (the binary's default is 127.0.0.1:8080).
# `lossd healthcheck` reads the same variable and asks 127.0.0.1 for an unspecified address.
ENV LOSSD_ADDR=0.0.0.0:8080 \
    LOSSD_GRPC_ADDR=0.0.0.0:8001 \
    LOSSD_LOG_FORMAT=json
# 8080: HTTP (the JSON API and the Open Inference Protocol's /v2); 8001: its gRPC service.
EXPOSE 8080 8001
# Numeric, so Kubernetes' runAsNonRoot can check it.
USER 65532:65532
# No shell or curl in the image: the binary checks itself (GET /healthz, exit 0 on 200).
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/lossd", "healthcheck"]
# SIGTERM (the default stop signal) makes lossd stop accepting, answer 503 on /readyz and
# finish the requests in flight (at most LOSSD_REQUEST_TIMEOUT, 30 s by default): give it
# a longer stop timeout (`docker stop -t 45`, compose's stop_grace_period).
ENTRYPOINT ["/usr/local/bin/lossd"]
