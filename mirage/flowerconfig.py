"""Flower configuration (`celery flower --conf=mirage/flowerconfig.py`).

Basic auth is always on: Flower shows task arguments and can revoke tasks,
so it must never be open to anonymous users, its API included.
"""
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mirage.settings")
django.setup()

from django.conf import settings  # noqa: E402

basic_auth = [settings.MIRAGE_FLOWER_BASIC_AUTH]
address = os.environ.get("MIRAGE_FLOWER_ADDRESS", "127.0.0.1")
port = int(os.environ.get("MIRAGE_FLOWER_PORT", "5555"))
# Keep a bounded task history in memory.
max_tasks = 10000
