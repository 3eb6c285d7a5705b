"""Flower configuration (`celery flower --conf=mirage/flowerconfig.py`).

Basic auth is always on: Flower shows task arguments and can revoke tasks,
so it must never be open to anonymous users, its API included. Without
MIRAGE_FLOWER_BASIC_AUTH, a random password is generated once and kept in
`.mirage/flower-credentials` (readable by its owner only), so no deployment
ever runs with a published default.
"""

import os
import secrets

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mirage.settings")
django.setup()

from django.conf import settings  # noqa: E402


def _credentials() -> str:
    if settings.MIRAGE_FLOWER_BASIC_AUTH:
        return settings.MIRAGE_FLOWER_BASIC_AUTH
    path = settings.STATE_DIR / "flower-credentials"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(f"admin:{secrets.token_urlsafe(18)}\n")
    credentials = path.read_text().strip()
    print(f"Flower basic auth: user 'admin', password in {path}", flush=True)
    return credentials


basic_auth = [_credentials()]
address = os.environ.get("MIRAGE_FLOWER_ADDRESS", "127.0.0.1")
port = int(os.environ.get("MIRAGE_FLOWER_PORT", "5555"))
# Keep a bounded task history in memory.
max_tasks = 10000
