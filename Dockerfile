# The CPU image of the three services: `moodwire ingest`, `moodwire score`, `moodwire alert`
# (docker-compose.yml tags it moodwire:latest). The GPU scorer has its own image: Dockerfile.gpu.
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY moodwire ./moodwire
COPY ingest ./ingest
COPY scorer ./scorer
COPY alerting ./alerting
COPY bench ./bench
COPY models ./models
# The services run as uid 10001, which owns only its data_dir, /var/lib/moodwire (the compose
# volumes mount there; a fresh named volume takes this owner); /app stays read-only to it.
RUN pip install --no-cache-dir . \
    && groupadd --system --gid 10001 moodwire \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/moodwire --no-create-home \
        --shell /usr/sbin/nologin moodwire \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/moodwire
USER 10001:10001
ENV MOODWIRE_DATA_DIR=/var/lib/moodwire \
    MOODWIRE_MODEL_DIR=/app/models/default \
    MOODWIRE_LOG_FORMAT=json \
    HOME=/var/lib/moodwire
EXPOSE 9100
ENTRYPOINT ["moodwire"]
