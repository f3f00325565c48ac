# The full service (page, REST API, numbers, photos, corrections) as a container image for any host that runs
# one: a container Hugging Face Space, Cloud Run, Fly.io, a VM. Serving needs no torch: the image holds the
# wheel and its serving dependencies only. tests/test_container.py runs these same steps in a fresh virtual
# environment as an unprivileged user.
#
#   docker build -t digitrecognizer .
#   docker run -p 7860:7860 -v digitrecognizer-data:/data digitrecognizer

FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-deps --no-cache-dir --wheel-dir /dist .

FROM python:3.11-slim
# The port comes from the host ($PORT on most platforms; 7860 is the convention of container Spaces). The host
# names the service answers to: any, since a platform's router sets them; list yours to be strict.
ENV PORT=7860 \
    DIGITRECOGNIZER_DB=/data/feedback.db \
    DIGITRECOGNIZER_ALLOWED_HOSTS=* \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN useradd --uid 1000 --create-home --shell /usr/sbin/nologin app && mkdir /data && chown app:app /data
# One layer for the wheel: mounted from the build stage, installed, and not kept in the image.
RUN --mount=type=bind,from=wheel,source=/dist,target=/dist \
    pip install --no-cache-dir --disable-pip-version-check /dist/*.whl
USER 1000
WORKDIR /home/app
VOLUME /data
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/api/health' % os.environ.get('PORT', '7860'), timeout=4)"
CMD ["sh", "-c", "exec digitrecognizer serve --host 0.0.0.0 --port ${PORT:-7860}"]
