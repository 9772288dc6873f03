# The riskstream worker/producer image used by docker-compose.yml.
# Stage 1 builds the wheel with the score path's compiled kernels (streams/native: Cython,
# so it needs a C compiler); the runtime image gets the wheel, not the compiler.
FROM python:3.11.14-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY streams ./streams
COPY models ./models
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && python -m zipfile -l /wheels/riskstream-*.whl | grep -q "streams/native/_cards" \
 || { echo "the wheel has no compiled kernels" >&2; exit 1; }

FROM python:3.11.14-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 OPENBLAS_NUM_THREADS=1
WORKDIR /app
COPY --from=build /wheels /wheels
COPY artifacts ./artifacts
RUN pip install --no-cache-dir /wheels/riskstream-*.whl && rm -rf /wheels
RUN useradd --create-home riskstream
USER riskstream
ENV RISKSTREAM_STATE_DIR=/home/riskstream/.riskstream
EXPOSE 6066
CMD ["riskstream", "worker"]
