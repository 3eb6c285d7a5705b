"""Standard Webhooks signatures (https://www.standardwebhooks.com): any of
its libraries verifies what Mirage sends."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def sign(*, secret: str, message_id: str, timestamp: int, body: str) -> str:
    """The `webhook-signature` value: `v1,<base64 HMAC-SHA256>` of
    `{id}.{timestamp}.{body}`, keyed with the secret's decoded payload."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{message_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(*, secret: str, message_id: str, timestamp: int, body: str) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "user-agent": "Mirage-Webhooks/1",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret=secret, message_id=message_id, timestamp=timestamp, body=body),
    }
