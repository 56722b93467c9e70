"""Provider webhooks (docs/webhooks.md): verify the signature over the raw body, store the event in the inbox
(`webhook_events`) in one transaction, acknowledge; apply it later, idempotently, through the status pull's own
write path (`integration_core.delivery.updates.apply_update`).

Modules: `signing` (HMAC-SHA256, hex/base64, timestamp tolerance), `endpoints` (per-connection settings, the
encrypted write-only secret, provider defaults), `events` (what each provider's payload says: event id, type,
record, time; its changes as `ExternalUpdate`s), `inbox` (store, rejected-call counters, operator views), `apply`
(the inbox → routings loop the Dagster sensor runs).
"""
