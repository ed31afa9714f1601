# The audit-worker image: the worker that runs queued audits.
#
# Built offline: the base image is made locally (scripts/base-image.sh, then a
# docker.import step) and the static binary by scripts/build.sh, since no Rust
# image can be pulled here. Stage 1 checks the binary runs with no libraries
# and assembles the root filesystem; stage 2 is that filesystem alone on
# scratch: no shell, no package manager, a few MB.
ARG BASE=pipe-base/busybox:static

FROM ${BASE} AS build
# The binary first: a rebuild of the service reuses the steps above it.
COPY dist/audit-worker /rootfs/audit-worker
RUN /rootfs/audit-worker version \
 && mkdir -p /rootfs/etc /rootfs/tmp /rootfs/data \
 && grep -E '^(root|app):' /etc/passwd > /rootfs/etc/passwd \
 && grep -E '^(root|app):' /etc/group > /rootfs/etc/group \
 && cp /etc/nsswitch.conf /rootfs/etc/nsswitch.conf \
 && chown 10001:10001 /rootfs/data \
 && chmod 1777 /rootfs/tmp

FROM scratch
ARG VERSION=0.0.0-dev
ARG GIT_SHA=unknown
ARG BUILD_DATE=unknown
# BROKEN=1 builds a version that answers 500 to every request but /health and
# /metrics: the rollback demo.
ARG BROKEN=0
LABEL org.opencontainers.image.title="audit-worker" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_SHA}" \
      org.opencontainers.image.created="${BUILD_DATE}" \
      org.opencontainers.image.source="examples/audit-service"
COPY --from=build /rootfs/ /
ENV APP_VERSION=${VERSION} \
    GIT_SHA=${GIT_SHA} \
    BUILD_DATE=${BUILD_DATE} \
    AUDIT_BROKEN=${BROKEN} \
    PORT=8080 \
    DATABASE_URL=sqlite:///data/audit.db
USER 10001:10001
WORKDIR /data
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=3s --start-period=3s --retries=3 \
  CMD ["/audit-worker", "healthcheck"]
ENTRYPOINT ["/audit-worker"]
