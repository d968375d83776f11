# syntax=docker/dockerfile:1
#
# tether: a static binary on distroless, running as non-root.
#
#   docker build -t tetherproxy/tether:0.1.0 .
#   docker run --rm -p 8080:8080 -p 9090:9090 -e OPENAI_API_KEY tetherproxy/tether:0.1.0
#
# The image runs `tether serve --config /etc/tether/tether.yaml`. It ships a
# small default /etc/tether/tether.yaml that listens on all interfaces (tether's
# built-in defaults listen on 127.0.0.1 only, which a container port cannot
# reach); mount your own file over /etc/tether (the Helm chart mounts its
# ConfigMap there). With no upstream configured tether uses OpenAI when
# OPENAI_API_KEY is set and its built-in mock backend otherwise.

# Build on the builder's platform and cross-compile: no emulation needed.
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
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/tether ./cmd/tether

# The image's default config. Admin endpoints are unauthenticated: pprof stays off.
RUN mkdir -p /out/etc/tether && printf '%s\n' \
    '# Default config of the tether image; mount your own over /etc/tether.' \
    'server:' \
    '  listen: "0.0.0.0:8080"' \
    'admin:' \
    '  listen: "0.0.0.0:9090"' \
    '  pprof: false' \
    > /out/etc/tether/tether.yaml

# distroless/static: CA certificates, tzdata and /etc/passwd with the nonroot
# user (65532), nothing else: no shell, no package manager.
FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/tether /usr/local/bin/tether
COPY --from=build /out/etc/tether/tether.yaml /etc/tether/tether.yaml
# Numeric, so the kubelet can verify runAsNonRoot without a runAsUser.
USER 65532:65532
# 8080: client WebSocket listener; 9090: admin (/healthz /readyz /metrics /sessions).
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/tether"]
CMD ["serve", "--config", "/etc/tether/tether.yaml"]
