# syntax=docker/dockerfile:1
# The `ddbguard` binary in a small, non-root runtime image (see docs/OPERATIONS.md).
#
#   docker build --build-arg GIT_SHA=$(git rev-parse --short=12 HEAD) -t ddbguard .
#
# Not built in CI (the CI machines have no Docker); build it where Docker exists. The build context excludes
# .git (.dockerignore), so the revision for `--version` and `ddbguard_build_info` comes from GIT_SHA.

FROM rust:1.95-bookworm AS build
# aws-lc-sys (the AWS SDK's TLS crypto) is C and assembly built with cmake.
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ARG GIT_SHA=unknown
ENV GIT_SHA=${GIT_SHA}
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p ddbguard \
    && install -D -m 0755 target/release/ddbguard /out/ddbguard

# glibc, libgcc, CA certificates and a `nonroot` user (uid 65532); no shell, no package manager, no curl —
# the container health check is `ddbguard health`.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ddbguard /usr/local/bin/ddbguard
USER nonroot:nonroot
EXPOSE 9464
ENV DDBGUARD_LOG_FORMAT=json
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["/usr/local/bin/ddbguard", "health"]
ENTRYPOINT ["/usr/local/bin/ddbguard"]
CMD ["--help"]
