# syntax=docker/dockerfile:1
#
# tether: a static binary on an empty base, running as non-root.
#
#   docker build --build-arg REVISION=$(git rev-parse HEAD) -t tetherproxy/tether:0.1.0 .
#   docker run --rm -p 8080:8080 -p 9090:9090 -e OPENAI_API_KEY tetherproxy/tether:0.1.0
#
# For those with Docker. `make image` builds the same image without a Docker
# engine or a base image pull (build/image, go-containerregistry): both for
# linux/amd64 and linux/arm64 as one index, reproducibly; that is the image
# the Helm chart's values name. Both take the same inputs: ./cmd/tether built
# with the same flags, build/image/rootfs (/etc/passwd and /etc/group with the
# nonroot user 65532, the default /etc/tether/tether.yaml) and Debian's CA
# bundle; build/image's test checks that this file keeps the same user, ports,
# entrypoint, command and labels.
#
# The image runs `tether serve --config /etc/tether/tether.yaml`. Its default
# config listens on all interfaces (tether's built-in defaults listen on
# 127.0.0.1 only, which a container port cannot reach); mount your own file
# over /etc/tether (the Helm chart mounts its ConfigMap there). With no
# upstream configured tether uses OpenAI when OPENAI_API_KEY is set and its
# built-in mock backend otherwise. Admin endpoints are unauthenticated: the
# default config keeps pprof off.

# Build on the builder's platform and cross-compile: no emulation needed.
# golang:1.26 is Debian: its /etc/ssl/certs/ca-certificates.crt is the bundle.
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=0.1.0
WORKDIR /src
ENV CGO_ENABLED=0 GOTOOLCHAIN=local

# Dependencies first, so source edits reuse the module layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download

COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -buildvcs=false -ldflags "-s -w -X main.version=${VERSION}" -o /out/tether ./cmd/tether

# Nothing but the files above: no shell, no package manager.
FROM scratch
ARG VERSION=0.1.0
ARG REVISION=unknown
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY build/image/rootfs/ /
COPY --from=build /out/tether /usr/local/bin/tether
ENV PATH=/usr/local/bin:/usr/bin:/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
LABEL org.opencontainers.image.source="https://github.com/tetherproxy/tether" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.title="tether" \
      org.opencontainers.image.description="tether, a WebSocket sidecar proxy for realtime voice APIs: a static binary on an empty base, running as 65532"
# Numeric, so the kubelet can verify runAsNonRoot without a runAsUser.
USER 65532:65532
# 8080: client WebSocket listener; 9090: admin (/healthz /readyz /metrics /sessions).
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/tether"]
CMD ["serve", "--config", "/etc/tether/tether.yaml"]
