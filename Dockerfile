# The riskstream worker/producer image used by docker-compose.yml.
FROM python:3.11.14-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 OPENBLAS_NUM_THREADS=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY models ./models
COPY artifacts ./artifacts
RUN pip install --no-cache-dir .
RUN useradd --create-home riskstream
USER riskstream
ENV RISKSTREAM_STATE_DIR=/home/riskstream/.riskstream
EXPOSE 6066
CMD ["riskstream", "worker"]
