# The gateway image. scripts/build-gateway-image.sh builds it without any registry: the
# binary is built on the host and the base is the Debian image made with debootstrap (the
# same one the runtime uses). With a registry: --build-arg BASE=debian:bookworm-slim.
# Build context: this file, the `lazygate` binary and `lazygate.toml` (see the script).
ARG BASE=lazygate-debian:bookworm
FROM ${BASE}
# iproute2: the gateway's image is also the helper that fences each runtime inside its own
# network namespace (`ip route replace prohibit <subnet pool>`).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iproute2 \
 && rm -rf /var/lib/apt/lists/*
COPY lazygate /usr/local/bin/lazygate
COPY lazygate.toml /etc/lazygate/lazygate.toml
ENV LAZYGATE_CONFIG=/etc/lazygate/lazygate.toml \
    BROWSER_RUNTIME_STATE_DIR=/var/lib/lazygate
VOLUME /var/lib/lazygate
EXPOSE 8080
# lazygate handles SIGTERM itself (drains, then exits; runtimes keep running).
ENTRYPOINT ["/usr/local/bin/lazygate", "serve"]
