# syntax=docker/dockerfile:1
# The blastguard image: the server binary at /blastguard, run as the distroless
# nonroot user (65532) that the chart's securityContext expects.
#   docker build --build-arg BLASTGUARD_COMMIT=$(git rev-parse HEAD) \
#     -t ghcr.io/blastguard/blastguard:0.1.0 .
# Releases are built without a daemon by scripts/image.sh (a static binary on scratch,
# docs/release.md); this file is for those who build with Docker or BuildKit.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The commit blastguard_build_info names (src/server/metrics.rs reads it at compile
# time). Passed in because .dockerignore keeps .git out of the build context.
ARG BLASTGUARD_COMMIT=unknown
ENV BLASTGUARD_COMMIT=${BLASTGUARD_COMMIT}
# Cache mounts keep the registry and build artifacts between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin blastguard \
 && cp target/release/blastguard /blastguard

# glibc and libgcc for the dynamically linked Rust binary; no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /blastguard /blastguard
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["/blastguard"]
CMD ["serve"]
