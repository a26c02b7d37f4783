# One image for the three services: `moodwire ingest`, `moodwire score`, `moodwire alert`.
# Build with --build-arg EXTRAS=gpu for onnxruntime-gpu (the scorer falls back to CPU without a GPU).
FROM python:3.11-slim
ARG EXTRAS=""
WORKDIR /app
COPY pyproject.toml README.md ./
COPY moodwire ./moodwire
COPY ingest ./ingest
COPY scorer ./scorer
COPY alerting ./alerting
COPY bench ./bench
COPY models ./models
RUN pip install --no-cache-dir ".${EXTRAS:+[$EXTRAS]}" \
    && useradd --system --uid 10001 moodwire
USER moodwire
ENV MOODWIRE_MODEL_DIR=/app/models/default \
    MOODWIRE_LOG_FORMAT=json \
    MOODWIRE_BUS=kafka \
    MOODWIRE_STORE=clickhouse
ENTRYPOINT ["moodwire"]
