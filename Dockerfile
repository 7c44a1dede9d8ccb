# One image for every technic-stream process; the command picks the process:
#   docker run technic-stream engine | scanner | notifier | archiver | bars | gateway | topics create
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY technic_stream ./technic_stream
COPY consumers ./consumers
COPY producers ./producers
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    NUMBA_CACHE_DIR=/opt/numba-cache \
    TECHNIC_LOG_FORMAT=json \
    TECHNIC_OPS_HOST=0.0.0.0 \
    TECHNIC_OPS_PORT=9400
COPY --from=build /install /usr/local
RUN useradd --system --uid 10001 technic
# the kernels compiled into the image (a minute or two here): a container's engine then
# loads them in a fraction of a second instead of compiling them before it can take
# partitions, and a scan or a chart needs no compile either (numba keys its cache on the
# sources' path and stamp: the same in the image)
RUN technic-stream warm && chown -R technic "$NUMBA_CACHE_DIR"
USER technic
EXPOSE 9400
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9400/healthz', timeout=2)"
ENTRYPOINT ["technic-stream"]
STOPSIGNAL SIGTERM
