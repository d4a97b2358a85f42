"""Revisions of the gateway's own tables (idempotency keys, webhook events, redemption states)."""
