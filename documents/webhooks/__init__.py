"""Signed webhooks: a project's subscribers are told when a document or a job
ends and when a document is deleted (see docs/webhooks.md)."""
