# syntax=docker/dockerfile:1
# wss-sidecar: one static binary on distroless/static (CA certificates, /etc/passwd with the
# nonroot user, tzdata; no shell, no libc). The same image runs the proxy (the injected sidecar)
# and the injector.
#
#   docker build -t registry.example/wss-sidecar:0.2.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t registry.example/wss-sidecar:0.2.0 .
#
# Multi-platform: buildx sets TARGETARCH and runs the build stage as that platform (QEMU
# where it differs from the builder's), so scripts/build-static, which builds for the host's
# *-linux-gnu target with the C runtime linked in, builds amd64 -> x86_64-unknown-linux-gnu
# and arm64 -> aarch64-unknown-linux-gnu. Only amd64 is built and tested by this project.
#
# Size: about 17 MiB (a 15 MiB static release binary on ~2 MiB of distroless/static).

# --- build: the same script CI tests outside Docker (tests/it/static_binary.rs) ---
FROM docker.io/library/rust:1.95-bookworm AS build
# Set by buildx (and by BuildKit's plain `docker build`, to the builder's architecture).
ARG TARGETARCH
WORKDIR /src
COPY . .
# One target cache per architecture: the trees must not mix.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,id=wss-sidecar-target-${TARGETARCH},target=/src/target \
    case "${TARGETARCH:-amd64}" in \
      amd64) want=x86_64-unknown-linux-gnu ;; \
      arm64) want=aarch64-unknown-linux-gnu ;; \
      *) echo "Dockerfile: TARGETARCH=${TARGETARCH} is not supported (amd64 or arm64)" >&2; exit 1 ;; \
    esac && \
    host="$(rustc -vV | sed -n 's/^host: //p')" && \
    if [ "$host" != "$want" ]; then \
      echo "Dockerfile: TARGETARCH=${TARGETARCH} wants $want but this stage runs on $host" >&2; exit 1; \
    fi && \
    scripts/build-static --profile release --out /out/wss-sidecar

# --- final: non-root, read-only friendly, nothing but the binary ---
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=0.2.0
LABEL org.opencontainers.image.title="wss-sidecar" \
      org.opencontainers.image.description="TLS termination for WebSocket traffic (wss://) as a Kubernetes sidecar, and its injector" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/wss-sidecar/wss-sidecar"
COPY --from=build /out/wss-sidecar /usr/local/bin/wss-sidecar
# 65532 is distroless' "nonroot"; the injector sets the same UID on injected sidecars.
USER 65532:65532
EXPOSE 8443 9090
ENTRYPOINT ["/usr/local/bin/wss-sidecar"]
CMD ["proxy"]
