# syntax=docker/dockerfile:1
# wss-sidecar: one static binary on distroless/static (CA certificates, /etc/passwd with the
# nonroot user, tzdata; no shell, no libc). The same image runs the proxy (the injected sidecar)
# and the injector.
#
#   docker build -t registry.example/wss-sidecar:0.1.0 .
#
# Size: about 17 MiB (a 15 MiB static release binary on ~2 MiB of distroless/static).

# --- build: the same script CI tests outside Docker (tests/it/static_binary.rs) ---
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    scripts/build-static --profile release --out /out/wss-sidecar

# --- final: non-root, read-only friendly, nothing but the binary ---
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=0.1.0
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
