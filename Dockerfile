# The Mirage application image: the web app, the Celery workers, beat and
# Flower all run from it (see docker-compose.yml).
FROM python:3.11-slim

# The local embedding model (all-MiniLM-L6-v2 on CPU torch) adds about 1 GB.
# Deployments that embed with Ollama or OpenAI build with
# --build-arg INSTALL_LOCAL_MODEL=false.
ARG INSTALL_LOCAL_MODEL=true
# PyPI's torch wheels bundle CUDA (several GB); the CPU build comes from here.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Tesseract reads scanned PDF pages (OCR). Add tesseract-ocr-<code> packages
# for the languages in MIRAGE_OCR_LANGUAGES with --build-arg OCR_LANGUAGES.
ARG OCR_LANGUAGES="eng"
RUN apt-get update \
 && apt-get install -y --no-install-recommends tesseract-ocr \
        $(for code in $OCR_LANGUAGES; do echo "tesseract-ocr-$code"; done) \
 && rm -rf /var/lib/apt/lists/*

# Requirements before the code, so a code change does not reinstall them.
COPY requirements/ requirements/
RUN pip install -r requirements/base.txt \
 && if [ "$INSTALL_LOCAL_MODEL" = "true" ]; then \
        pip install --extra-index-url "$TORCH_INDEX_URL" -r requirements/local-model.txt; \
    fi

# The code stays owned by root: the application cannot rewrite itself.
RUN useradd --system --create-home --uid 10001 mirage \
 && mkdir -p /data/media /app/static \
 && chown mirage:mirage /data/media /app/static
COPY . .

ENV MIRAGE_MEDIA_ROOT=/data/media \
    MIRAGE_STATIC_ROOT=/app/static

USER mirage
EXPOSE 8000
CMD ["uvicorn", "mirage.asgi:application", "--host", "0.0.0.0", "--port", "8000"]
