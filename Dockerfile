# alphaswarm-server container image.
#
#   docker build -t alphaswarm-controller .                          # local provider only
#   docker build --build-arg EXTRAS=kubernetes -t alphaswarm-controller:k8s .
#
# Without a registry (CI): python scripts/ci/build_image.py --extras kubernetes
# builds BASE_IMAGE from this machine's Python and puts a wheelhouse/ in the
# context, so nothing is pulled or fetched from an index.
#
# Transport: the server listens on 0.0.0.0:50051 and refuses plaintext there.
# Give it TLS (ALPHASWARM_CP_TLS_CERT / _KEY, plus _TLS_CLIENT_CA for mTLS), or set
# ALPHASWARM_CP_INSECURE=true yourself when something in front terminates TLS
# (a service mesh with mTLS, as the Kubernetes manifests in deploy/ assume).
# The image never turns plaintext on for you. See docs/operations.md, "Deploy".

ARG BASE_IMAGE=python:3.11-slim-bookworm

# --- builder: a venv with the package and only the selected extras ----------------
FROM ${BASE_IMAGE} AS builder
ARG EXTRAS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/alphaswarm
# The optional wheelhouse (pyproject.toml only keeps this COPY valid without one).
COPY pyproject.toml wheelhouse* /wheelhouse/
# Dependencies first, in a layer of their own: only a pyproject.toml change (not a
# source or README change) reinstalls them.
COPY pyproject.toml /deps/
RUN set -eu; \
    if ls /wheelhouse/*.whl >/dev/null 2>&1; then \
        export PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheelhouse; fi; \
    mkdir -p /deps/server /deps/client; touch /deps/README.md; \
    /opt/alphaswarm/bin/pip install --quiet "/deps${EXTRAS:+[$EXTRAS]}"; \
    /opt/alphaswarm/bin/pip uninstall --quiet -y alphaswarm-controller
COPY pyproject.toml README.md /src/
COPY server /src/server
COPY client /src/client
RUN set -eu; \
    if ls /wheelhouse/*.whl >/dev/null 2>&1; then \
        export PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheelhouse; fi; \
    /opt/alphaswarm/bin/pip install --quiet --no-deps /src; \
    /opt/alphaswarm/bin/pip check; \
    /opt/alphaswarm/bin/pip uninstall --quiet -y pip setuptools
COPY deploy/image/healthcheck.py /opt/alphaswarm/healthcheck.py

# --- runtime ----------------------------------------------------------------------
FROM ${BASE_IMAGE}
ARG EXTRAS=""
LABEL org.opencontainers.image.title="alphaswarm-controller" \
      org.opencontainers.image.description="gRPC control plane for workloads on many backends" \
      org.opencontainers.image.licenses="Apache-2.0" \
      dev.alphaswarm.extras="${EXTRAS}"
# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it.
RUN echo 'alphaswarm:x:10001:10001:alphaswarm:/var/lib/alphaswarm:/sbin/nologin' >>/etc/passwd \
    && echo 'alphaswarm:x:10001:' >>/etc/group \
    && mkdir -p /var/lib/alphaswarm \
    && chown 10001:10001 /var/lib/alphaswarm \
    && chmod 0700 /var/lib/alphaswarm
COPY --from=builder /opt/alphaswarm /opt/alphaswarm
ENV PATH=/opt/alphaswarm/bin:/usr/local/bin:/usr/bin:/bin \
    HOME=/var/lib/alphaswarm \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ALPHASWARM_CP_LISTEN=0.0.0.0:50051 \
    ALPHASWARM_CP_STATE_DIR=/var/lib/alphaswarm
USER 10001:10001
WORKDIR /var/lib/alphaswarm
# gRPC, and Prometheus metrics when ALPHASWARM_CP_METRICS_LISTEN serves them there.
EXPOSE 50051 9464
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/opt/alphaswarm/bin/python", "/opt/alphaswarm/healthcheck.py"]
ENTRYPOINT ["/opt/alphaswarm/bin/alphaswarm-server"]
CMD ["serve"]
