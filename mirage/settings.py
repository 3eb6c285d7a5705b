"""Mirage settings. The values an operator may change are read from the
environment here, with three exceptions read where they are used, before
Django starts or outside it: MIRAGE_TORCH_THREADS (documents/embeddings/
local.py, which has no Django), MIRAGE_FLOWER_ADDRESS and MIRAGE_FLOWER_PORT
(mirage/flowerconfig.py). `.env.example` and docs/configuration.md document
each one."""

from pathlib import Path
from urllib.parse import unquote

import environ
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

BASE_DIR = Path(__file__).resolve().parent.parent
STATE_DIR = BASE_DIR / ".mirage"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

SECRET_KEY = env("MIRAGE_SECRET_KEY", default="insecure-development-key-change-me")
DEBUG = env.bool("MIRAGE_DEBUG", default=False)
ALLOWED_HOSTS = env.list("MIRAGE_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("MIRAGE_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    # First: its admin/base_site.html (the degraded banner) overrides the admin's.
    "documents.monitoring",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "django_prometheus",
    "common",
    "common.filestore",
    "jobs",
    "documents",
]

MIDDLEWARE = [
    # django-prometheus: request counts and latencies (first and last, so
    # they measure everything in between).
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "mirage.urls"
WSGI_APPLICATION = "mirage.wsgi.application"
ASGI_APPLICATION = "mirage.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _database_from_url(url: str) -> dict:
    config = environ.Env.db_url_config(url)
    # A Unix socket directory arrives percent-encoded in the host part.
    config["HOST"] = unquote(str(config.get("HOST") or ""))
    # Web requests under ASGI run in a thread each; persistent connections
    # there pile up (Django advises 0): the web process pools them instead
    # (MIRAGE_WEB_DATABASE_POOL_SIZE, mirage/asgi.py). Celery workers keep
    # theirs (MIRAGE_WORKER_DATABASE_CONN_MAX_AGE, applied in mirage/celery.py).
    config["CONN_MAX_AGE"] = env.int("MIRAGE_DATABASE_CONN_MAX_AGE", default=0)
    config["CONN_HEALTH_CHECKS"] = True
    if config["ENGINE"] == "django.db.backends.postgresql":
        # The same backend, counting connections, queries and their duration
        # for /metrics (django-prometheus).
        config["ENGINE"] = "django_prometheus.db.backends.postgresql"
    return config


def _local_database_url() -> str:
    """The URL `make services` wrote for the project-local PostgreSQL."""
    url_file = STATE_DIR / "database_url"
    if url_file.exists():
        return url_file.read_text().strip()
    # Not started yet: point at where it will be, so that commands which need
    # no database (check, makemigrations --check) still run.
    return "postgres://postgres@" + str(STATE_DIR / "pgdata").replace("/", "%2F") + "/mirage"


MIRAGE_DATABASE_URL = env("MIRAGE_DATABASE_URL", default="") or _local_database_url()
MIRAGE_WORKER_DATABASE_CONN_MAX_AGE = env.int("MIRAGE_WORKER_DATABASE_CONN_MAX_AGE", default=60)
# Each web (ASGI) process borrows connections from a pool of at most this
# many (mirage/asgi.py); 0 opens one per request instead. A request waits at
# most MIRAGE_WEB_DATABASE_POOL_TIMEOUT_SECONDS for a free one.
MIRAGE_WEB_DATABASE_POOL_SIZE = env.int("MIRAGE_WEB_DATABASE_POOL_SIZE", default=8)
MIRAGE_WEB_DATABASE_POOL_TIMEOUT_SECONDS = env.float("MIRAGE_WEB_DATABASE_POOL_TIMEOUT_SECONDS", default=10.0)
DATABASES = {"default": _database_from_url(MIRAGE_DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env("MIRAGE_STATIC_ROOT", default=str(STATE_DIR / "static"))
# Serve static files from the app directories without collectstatic in
# development; `make run` and the container image run collectstatic.
WHITENOISE_USE_FINDERS = True
MEDIA_URL = "media/"
# Only where MIRAGE_FILE_STORAGE=filesystem keeps uploads, and where
# `manage.py filestore_import` finds an older deployment's files.
MEDIA_ROOT = env("MIRAGE_MEDIA_ROOT", default=str(STATE_DIR / "media"))

# Where uploaded files are stored: `database` (PostgreSQL, the default: every
# host that reaches the database reads them, nothing else to share or back
# up), `s3` (any S3-compatible object store, through django-storages) or
# `filesystem` (MIRAGE_MEDIA_ROOT; one machine, or a volume every host shares).
MIRAGE_FILE_STORAGE = env("MIRAGE_FILE_STORAGE", default="database")
MIRAGE_S3_BUCKET = env("MIRAGE_S3_BUCKET", default="")
MIRAGE_S3_ENDPOINT_URL = env("MIRAGE_S3_ENDPOINT_URL", default="")
MIRAGE_S3_REGION = env("MIRAGE_S3_REGION", default="")
MIRAGE_S3_ACCESS_KEY_ID = env("MIRAGE_S3_ACCESS_KEY_ID", default="")
MIRAGE_S3_SECRET_ACCESS_KEY = env("MIRAGE_S3_SECRET_ACCESS_KEY", default="")


def _file_storage(kind: str) -> dict:
    if kind == "database":
        return {"BACKEND": "common.filestore.storage.DatabaseStorage"}
    if kind == "filesystem":
        return {"BACKEND": "django.core.files.storage.FileSystemStorage"}
    if kind == "s3":
        if not MIRAGE_S3_BUCKET:
            raise ImproperlyConfigured("MIRAGE_FILE_STORAGE=s3 needs MIRAGE_S3_BUCKET")
        options = {
            "bucket_name": MIRAGE_S3_BUCKET,
            # Uploads get a free name like on disk, never overwrite another.
            "file_overwrite": False,
            "default_acl": None,
            "querystring_auth": True,
        }
        optional = {
            "endpoint_url": MIRAGE_S3_ENDPOINT_URL,
            "region_name": MIRAGE_S3_REGION,
            # Empty: boto3 finds credentials itself (instance role, env).
            "access_key": MIRAGE_S3_ACCESS_KEY_ID,
            "secret_key": MIRAGE_S3_SECRET_ACCESS_KEY,
        }
        options.update({key: value for key, value in optional.items() if value})
        return {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": options}
    raise ImproperlyConfigured(f"MIRAGE_FILE_STORAGE must be database, s3 or filesystem, not {kind!r}")


STORAGES = {
    "default": _file_storage(MIRAGE_FILE_STORAGE),
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

MIRAGE_MAX_UPLOAD_MB = env.int("MIRAGE_MAX_UPLOAD_MB", default=50)
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "filters": {"quiet_reconciler_ticks": {"()": "common.logging.QuietReconcilerTicks"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("MIRAGE_LOG_LEVEL", default="INFO")},
    "loggers": {
        # Clean reconciler ticks are not logged (repairs and failures are).
        "celery.beat": {"filters": ["quiet_reconciler_ticks"]},
        "celery.app.trace": {"filters": ["quiet_reconciler_ticks"]},
        "celery.worker.strategy": {"filters": ["quiet_reconciler_ticks"]},
        "django.db.backends": {"level": "WARNING"},
        "sentence_transformers": {"level": "WARNING"},
        # pypdf reports every font it cannot fully decode; the text still comes out.
        "pypdf": {"level": "ERROR"},
    },
}

# --- Mirage -----------------------------------------------------------------

# Embedding provider: hash, local, ollama, openai, or a dotted path to an
# Embedder class.
MIRAGE_EMBEDDER = env("MIRAGE_EMBEDDER", default="local")
MIRAGE_CHUNK_SIZE = env.int("MIRAGE_CHUNK_SIZE", default=400)
MIRAGE_CHUNK_OVERLAP = env.int("MIRAGE_CHUNK_OVERLAP", default=40)
# Tesseract languages for PDF pages without a usable text layer, joined by
# "+" (each needs its Debian package tesseract-ocr-<code> on the workers).
MIRAGE_OCR_LANGUAGES = env("MIRAGE_OCR_LANGUAGES", default="eng")
MIRAGE_MAX_CONCURRENT_INDEXING_JOBS = env.int("MIRAGE_MAX_CONCURRENT_INDEXING_JOBS", default=4)
MIRAGE_INDEXING_JOB_TIMEOUT_SECONDS = env.int("MIRAGE_INDEXING_JOB_TIMEOUT_SECONDS", default=3600)
MIRAGE_JOB_RETENTION_DAYS = env.int("MIRAGE_JOB_RETENTION_DAYS", default=30)
MIRAGE_HISTORY_RETENTION_DAYS = env.int("MIRAGE_HISTORY_RETENTION_DAYS", default=90)
MIRAGE_RECONCILE_INTERVAL_SECONDS = env.int("MIRAGE_RECONCILE_INTERVAL_SECONDS", default=10)
# A chunk claimed by a worker that has not finished within this many seconds
# is considered lost (worker killed) and is dispatched again.
MIRAGE_CHUNK_LEASE_SECONDS = env.int("MIRAGE_CHUNK_LEASE_SECONDS", default=120)
MIRAGE_CHUNK_MAX_ATTEMPTS = env.int("MIRAGE_CHUNK_MAX_ATTEMPTS", default=8)
# Retry countdown after a transient failure: base * 2**(attempt-1), capped.
# The cap stays far below the broker's visibility timeout.
MIRAGE_RETRY_BACKOFF_BASE_SECONDS = env.float("MIRAGE_RETRY_BACKOFF_BASE_SECONDS", default=1.0)
MIRAGE_RETRY_BACKOFF_MAX_SECONDS = env.float("MIRAGE_RETRY_BACKOFF_MAX_SECONDS", default=30.0)
# A document still `pending` this long after its job started was never
# dispatched (lost message) and is dispatched again.
MIRAGE_DISPATCH_GRACE_SECONDS = env.int("MIRAGE_DISPATCH_GRACE_SECONDS", default=60)
# A parse that started this long ago without producing chunks is considered
# lost (its worker died) and is dispatched again.
MIRAGE_PARSE_LEASE_SECONDS = env.int("MIRAGE_PARSE_LEASE_SECONDS", default=900)
# How often a lost task is dispatched again before the work is failed.
MIRAGE_MAX_DISPATCH_ATTEMPTS = env.int("MIRAGE_MAX_DISPATCH_ATTEMPTS", default=3)
MIRAGE_IMPORT_ROOTS = env.list("MIRAGE_IMPORT_ROOTS", default=[])
# HNSW candidate list per search (pgvector's hnsw.ef_search): higher finds
# more of the true nearest neighbours and costs latency (docs/benchmarks.md).
MIRAGE_HNSW_EF_SEARCH = env.int("MIRAGE_HNSW_EF_SEARCH", default=400)
# Projects with at most this many searchable chunks are searched exactly
# (every distance computed): faster than an index walk that must skip other
# projects' rows, and never misses. 0 always uses the HNSW index.
MIRAGE_EXACT_SEARCH_MAX_CHUNKS = env.int("MIRAGE_EXACT_SEARCH_MAX_CHUNKS", default=5000)
# Chunks a migration to another embedding model embeds per task (one
# provider call; the cache serves what it holds).
MIRAGE_EMBEDDER_MIGRATION_BATCH_SIZE = env.int("MIRAGE_EMBEDDER_MIGRATION_BATCH_SIZE", default=64)

# /healthz reports a queue whose oldest message has waited longer than this.
MIRAGE_QUEUE_MAX_WAIT_SECONDS = env.int("MIRAGE_QUEUE_MAX_WAIT_SECONDS", default=900)
# GET /metrics requires `Authorization: Bearer <this>` when set; empty: open
# (restrict it at the proxy).
MIRAGE_METRICS_TOKEN = env("MIRAGE_METRICS_TOKEN", default="")
# Webhooks. Each attempt (and each redirect hop) may take this long.
MIRAGE_WEBHOOK_TIMEOUT_SECONDS = env.float("MIRAGE_WEBHOOK_TIMEOUT_SECONDS", default=10.0)
# Failed deliveries are retried after base * 2**(attempt-1) seconds (+-25 %
# jitter), capped at the max delay, until the delivery is this old.
MIRAGE_WEBHOOK_RETRY_BASE_SECONDS = env.float("MIRAGE_WEBHOOK_RETRY_BASE_SECONDS", default=5.0)
MIRAGE_WEBHOOK_RETRY_MAX_DELAY_SECONDS = env.float("MIRAGE_WEBHOOK_RETRY_MAX_DELAY_SECONDS", default=6 * 3600.0)
MIRAGE_WEBHOOK_RETRY_HOURS = env.float("MIRAGE_WEBHOOK_RETRY_HOURS", default=26.0)
# A webhook whose attempts have failed for longer than this is disabled.
MIRAGE_WEBHOOK_DISABLE_AFTER_HOURS = env.float("MIRAGE_WEBHOOK_DISABLE_AFTER_HOURS", default=72.0)
# Let webhook URLs reach loopback, private and link-local addresses (a
# receiver on the same host or network). Off: such URLs are refused.
MIRAGE_WEBHOOK_ALLOW_PRIVATE = env.bool("MIRAGE_WEBHOOK_ALLOW_PRIVATE", default=False)

MIRAGE_OLLAMA_URL = env("MIRAGE_OLLAMA_URL", default="http://127.0.0.1:11434")
MIRAGE_OLLAMA_MODEL = env("MIRAGE_OLLAMA_MODEL", default="mxbai-embed-large")
MIRAGE_OLLAMA_DIMENSIONS = env.int("MIRAGE_OLLAMA_DIMENSIONS", default=1024)
# Usable tokens per input, without the model's special tokens (mxbai: 512 - 2).
MIRAGE_OLLAMA_MAX_INPUT_TOKENS = env.int("MIRAGE_OLLAMA_MAX_INPUT_TOKENS", default=510)
MIRAGE_OPENAI_BASE_URL = env("MIRAGE_OPENAI_BASE_URL", default="https://api.openai.com/v1")
MIRAGE_OPENAI_API_KEY = env("MIRAGE_OPENAI_API_KEY", default="")
MIRAGE_OPENAI_MODEL = env("MIRAGE_OPENAI_MODEL", default="text-embedding-3-small")
MIRAGE_OPENAI_DIMENSIONS = env.int("MIRAGE_OPENAI_DIMENSIONS", default=1536)
# Leave unset for OpenAI's own models (8191); set for other compatible servers.
MIRAGE_OPENAI_MAX_INPUT_TOKENS = env.int("MIRAGE_OPENAI_MAX_INPUT_TOKENS", default=None)
MIRAGE_EMBED_TIMEOUT_SECONDS = env.float("MIRAGE_EMBED_TIMEOUT_SECONDS", default=60.0)
MIRAGE_EMBED_REQUESTS_PER_MINUTE = env.int("MIRAGE_EMBED_REQUESTS_PER_MINUTE", default=0)
# Concurrent embed tasks of one worker share a micro-batcher: up to this many
# texts per provider call, waiting at most this long for announced tasks.
MIRAGE_EMBED_BATCH_SIZE = env.int("MIRAGE_EMBED_BATCH_SIZE", default=64)
MIRAGE_EMBED_BATCH_WAIT_MS = env.float("MIRAGE_EMBED_BATCH_WAIT_MS", default=10.0)

# --- Celery -----------------------------------------------------------------

MIRAGE_REDIS_URL = env("MIRAGE_REDIS_URL", default="redis://127.0.0.1:6379/0")


def _default_redis_prefix(database: dict) -> str:
    """One deployment per database: `mirage-<database name>-<8 hex of its
    host, port and name>:`, so two deployments sharing a Redis database
    never see each other's keys, queues or events."""
    import hashlib

    where = f"{database.get('HOST', '')}:{database.get('PORT', '')}/{database.get('NAME', '')}"
    return f"mirage-{database.get('NAME', '')}-{hashlib.sha1(where.encode()).hexdigest()[:8]}:"


# Every Redis key and queue of this deployment starts with it: events,
# request budgets, dispatch markers, Celery's queues, results and chord
# counters (Celery's `global_keyprefix`, for the transport and the backend).
MIRAGE_REDIS_PREFIX = env("MIRAGE_REDIS_PREFIX", default="") or _default_redis_prefix(DATABASES["default"])
CELERY_BROKER_URL = MIRAGE_REDIS_URL
# kombu's Redis transport, with one Redis client per channel instead of one
# per message sent (mirage/broker.py).
CELERY_BROKER_TRANSPORT = "mirage.broker:Transport"
CELERY_RESULT_BACKEND = MIRAGE_REDIS_URL
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TIMEZONE = TIME_ZONE
# Acknowledge after the task ran, and give the message back when the worker
# process dies under it: a killed worker loses no work.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# One message reserved per process: a killed worker strands at most one.
CELERY_WORKER_PREFETCH_MULTIPLIER = env.int("MIRAGE_WORKER_PREFETCH_MULTIPLIER", default=1)
# Celery's Django fixup closes every database connection before and after
# each task unless this is set, so a worker would open a new connection per
# task. Set high, it leaves connections alone; mirage/celery.py applies
# Django's own rules instead (CONN_MAX_AGE, close after errors).
CELERY_DB_REUSE_MAX = 1_000_000_000
# Hard limits on task run time; the broker's visibility timeout below must
# stay above the longest of them, or Redis hands a running task to a second
# worker.
MIRAGE_PARSE_TIME_LIMIT_SECONDS = env.int("MIRAGE_PARSE_TIME_LIMIT_SECONDS", default=1800)
MIRAGE_EMBED_TIME_LIMIT_SECONDS = env.int("MIRAGE_EMBED_TIME_LIMIT_SECONDS", default=300)
# Budgets of one parse (documents.parsers.budgets): the address space of the
# child process that parses (0: parse in the worker, unlimited), pages (or
# chapters, slides) and chunks per document (0: unlimited).
MIRAGE_PARSE_MEMORY_MB = env.int("MIRAGE_PARSE_MEMORY_MB", default=1024)
MIRAGE_MAX_PAGES = env.int("MIRAGE_MAX_PAGES", default=2000)
MIRAGE_MAX_CHUNKS_PER_DOCUMENT = env.int("MIRAGE_MAX_CHUNKS_PER_DOCUMENT", default=50000)
# Characters of text extracted from one file, all its sections together.
MIRAGE_MAX_EXTRACTED_CHARACTERS = env.int("MIRAGE_MAX_EXTRACTED_CHARACTERS", default=50_000_000)
# Embed tasks each indexing document keeps in the broker at most; the next
# is sent as one finishes (fair share across documents and projects).
MIRAGE_DISPATCH_WINDOW = env.int("MIRAGE_DISPATCH_WINDOW", default=64)
# Tasks sent without a priority are `normal` (see the priority steps below).
CELERY_TASK_DEFAULT_PRIORITY = 3
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("MIRAGE_VISIBILITY_TIMEOUT_SECONDS", default=3600),
    "global_keyprefix": MIRAGE_REDIS_PREFIX,
    # A broker cut off by the network without closing the connection must
    # fail a publish within seconds instead of hanging it forever (kombu's
    # default): the upload or task that published gives up, and the
    # reconcilers send the work again once the broker answers.
    "socket_timeout": 5,
    "socket_connect_timeout": 3,
    "socket_keepalive": True,
    # Message priorities on Redis: one list per step, 0 served first. Job
    # priorities map to 0 (high), 3 (normal), 6 (low) (documents.services.dispatch).
    "priority_steps": [0, 3, 6, 9],
    "queue_order_strategy": "priority",
}
# Two more tries at most: a web process cut off from the broker answers an
# upload within about 15 s instead of holding it for a minute.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}
CELERY_REDIS_SOCKET_CONNECT_TIMEOUT = 5
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"retry_policy": {"timeout": 5.0}, "global_keyprefix": MIRAGE_REDIS_PREFIX}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Task results and chord counters are deleted from Redis this long after
# they were written; a chord still unfinished then is finalized by the
# reconciler. Keep it above MIRAGE_CHUNK_LEASE_SECONDS.
CELERY_RESULT_EXPIRES = env.int("MIRAGE_RESULT_EXPIRES_SECONDS", default=24 * 3600)
CELERY_TASK_TRACK_STARTED = True
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_TASK_DEFAULT_QUEUE = "ingest"
CELERY_TASK_QUEUES = [Queue("ingest"), Queue("embed"), Queue("maintenance")]
CELERY_TASK_ROUTES = {
    "documents.embed_chunk": {"queue": "embed"},
    "documents.migrate_embedder": {"queue": "embed"},
    # Webhook attempts wait on receivers (short timeouts), not on the CPU.
    "documents.deliver_webhook": {"queue": "ingest"},
    "documents.*": {"queue": "ingest"},
    "reconcile.*": {"queue": "maintenance"},
}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"

# Flower basic auth (user:password). Empty: mirage/flowerconfig.py generates
# a password once and keeps it in .mirage/flower-credentials.
MIRAGE_FLOWER_BASIC_AUTH = env("MIRAGE_FLOWER_BASIC_AUTH", default="")
MIRAGE_FLOWER_URL = env("MIRAGE_FLOWER_URL", default="http://127.0.0.1:5555")

# --- REST framework -----------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "common.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "common.api.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Mirage API",
    "DESCRIPTION": "Document ingestion, embedding and search.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and Swagger UI need credentials like every other endpoint.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI's assets come from the deployment itself (the sidecar
    # package), so /api/docs/ works without internet access.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Reconcilers (Celery beat) ------------------------------------------------
# Defined here; django-celery-beat copies them into the database, where an
# operator can disable one in the admin (the choice survives restarts).


def _periodic(task: str, every: float) -> dict:
    """A beat entry whose messages expire after one period: nobody consuming
    the maintenance queue must not leave a pile of them (beat also removes
    expired ones, see documents/monitoring/recording.py). `expires` is what Celery's
    own schedulers pass on; django-celery-beat stores `expire_seconds`."""
    return {
        "task": task,
        "schedule": float(every),
        "options": {"expires": float(every), "expire_seconds": max(1, int(every))},
    }


CELERY_BEAT_SCHEDULE = {
    "finalize-settled-documents": _periodic("reconcile.finalize_settled_documents", MIRAGE_RECONCILE_INTERVAL_SECONDS),
    "redispatch-stuck-chunks": _periodic("reconcile.redispatch_stuck_chunks", MIRAGE_RECONCILE_INTERVAL_SECONDS),
    "redispatch-unparsed-documents": _periodic(
        "reconcile.redispatch_unparsed_documents", MIRAGE_RECONCILE_INTERVAL_SECONDS
    ),
    "admit-pending-jobs": _periodic("reconcile.admit_pending_jobs", MIRAGE_RECONCILE_INTERVAL_SECONDS),
    "fail-timed-out-jobs": _periodic("reconcile.fail_timed_out_jobs", 60),
    "purge-finished-jobs": _periodic("reconcile.purge_finished_jobs", 3600),
    "purge-history": _periodic("reconcile.purge_history", 3600),
    "repair-embedder-migrations": _periodic("reconcile.repair_embedder_migrations", MIRAGE_RECONCILE_INTERVAL_SECONDS),
    "send-due-webhook-deliveries": _periodic(
        "reconcile.send_due_webhook_deliveries", MIRAGE_RECONCILE_INTERVAL_SECONDS
    ),
}
