# syntax=docker/dockerfile:1
#
# ringcast in a container: one image for both roles; the command chooses which.
#
#   docker compose up -d --build          compose.yaml: a server and a test-pattern camera
#   docker build -t ringcast:local .      the image alone (BuildKit, the default builder)
#   docker build --build-arg FFMPEG=no -t ringcast:local .    without ffmpeg (no RTSP/RTMP)
#
# UNTESTED HERE: this file was written on a machine without a container engine, so no image has
# been built from it yet. What was checked without one: hadolint passes; BuildKit's own parser
# (through the `dockerfile` Python package) reads it; the build command is the one scripts/demo
# runs; ldd shows the binaries need only libc and libgcc_s; the runtime stage's RUN step was run
# in a Debian 12 minbase chroot (mmdebstrap), and the binaries and the health check ran there as
# uid 10001, without capabilities, on a read-only root with the ring directory on a shared tmpfs
# as compose.yaml sets it up. Build it once before relying on it.
#
# Roles:
#   ringcast-server --workers 2                        the web server (the default command)
#   ringcast-capture                                   one per camera, set by RINGCAST_* variables
#   ringcast-ringctl inspect /run/ringcast/cam1.ring   look at a ring
#
# The processes that share rings must see one ring directory (RINGCAST_RING_DIR, /run/ringcast
# here) and one PID namespace (a ring's reader checks that the writer's pid is alive). With a
# read-only root they also need a writable /tmp (the server's supervisor makes its workers'
# notify sockets there). compose.yaml does all of that; by hand it is:
#   docker volume create --opt type=tmpfs --opt device=tmpfs \
#       --opt o=size=256m,uid=10001,gid=10001,mode=0750 ringcast-rings
#   docker run -d --name ringcast --init --read-only --tmpfs /tmp:size=1m --cap-drop ALL \
#       -v ringcast-rings:/run/ringcast -p 7474:7474 ringcast:local
#   docker run -d --name cam1 --pid container:ringcast --read-only --cap-drop ALL \
#       -v ringcast-rings:/run/ringcast -e RINGCAST_CAMERA=cam1 ringcast:local ringcast-capture

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS build

# What building needs (scripts/install-deps build): cmake and nasm for turbojpeg's bundled
# libjpeg-turbo, libclang and clang for the v4l crate's bindgen, pkg-config.
# Versions are not pinned: bookworm's packages change only for fixes.
# hadolint ignore=DL3008
RUN set -eux; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        cmake nasm libclang-dev clang pkg-config; \
    rm -rf /var/lib/apt/lists/*

WORKDIR /src
# Only what the build reads: every workspace member's manifest must be there for --locked (the
# benches crate too, though it is not built). .dockerignore keeps target/ and .git out.
COPY Cargo.toml Cargo.lock ./
COPY ringbuf ringbuf
COPY capture capture
COPY server server
COPY benches benches

# The registry and target dir are cache mounts, so a rebuild after a source change recompiles
# ringcast only. A cache mount is not part of the image: the binaries are copied out of it in
# the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    set -eux; \
    cargo build --release --locked -p ringcast-capture -p ringcast-server -p ringcast-ringbuf; \
    mkdir -p /out; \
    cp target/release/ringcast-capture target/release/ringcast-server \
       target/release/ringcast-ringctl /out/

# ---------------------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime

# FFMPEG=no leaves ffmpeg out (a much smaller image) for setups without RTSP/RTMP cameras.
ARG FFMPEG=yes
# The user's ids; compose.yaml's tmpfs options name the same numbers.
ARG RINGCAST_UID=10001
ARG RINGCAST_GID=10001

# At run time the binaries need only libc and libgcc_s, both in the base image (turbojpeg is
# linked in statically). ffmpeg is what capture runs for rtsp:// and rtmp:// sources; curl is
# for the health check. The user is in group video for V4L2 cameras (the image's video group
# is gid 44; give the host's gid with group_add if its /dev/video* group differs).
# hadolint ignore=DL3008
RUN set -eux; \
    set -- curl; \
    if [ "$FFMPEG" = yes ]; then set -- "$@" ffmpeg; fi; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --gid "$RINGCAST_GID" ringcast; \
    useradd --uid "$RINGCAST_UID" --gid ringcast --groups video --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin ringcast; \
    install -d -o ringcast -g ringcast -m 0750 /run/ringcast

COPY --from=build /out/ /usr/local/bin/

# Both roles in one check: a capture (RINGCAST_CAMERA set) is healthy while its ring says it is
# online or idle (on demand); a server while /healthz answers on its port (RINGCAST_LISTEN's, or
# 7474). A server given another port with --listen should say so in RINGCAST_LISTEN instead.
COPY --chmod=0755 <<'EOF' /usr/local/bin/ringcast-healthcheck
#!/bin/sh
set -eu
if [ -n "${RINGCAST_CAMERA:-}" ]; then
    ringcast-ringctl inspect --json "${RINGCAST_RING_DIR}/${RINGCAST_CAMERA}.ring" |
        grep -Eq '"status":"(online|idle)"'
else
    listen=${RINGCAST_LISTEN:-0.0.0.0:7474}
    exec curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:${listen##*:}/healthz"
fi
EOF

# The ring directory: mount the shared tmpfs here (compose.yaml). It belongs to the ringcast
# user with mode 0750, as the binaries require of a ring directory (not another user's, not
# writable by others). Without a mount it lies in the container's own writable layer: it
# works, but nothing else can see it and a read-only container cannot write it.
ENV RINGCAST_RING_DIR=/run/ringcast

# The user alone, not uid:gid: Docker gives supplementary groups (video) only to a USER given
# without a group. Numeric, so that "run as non-root" checks can tell without /etc/passwd.
USER ${RINGCAST_UID}
EXPOSE 7474
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/ringcast-healthcheck"]
CMD ["ringcast-server", "--workers", "2"]
