"""Webhooks: the event feed pushed to receivers, signed per Standard Webhooks.

Guarantees (docs/webhooks.md says them for receivers):

- **Nothing lost, nothing invented: the event log is the outbox.** Each event is
  committed in the same transaction as the change it describes (connector.events), so
  the log is already a transactional outbox: a crash can never lose an event nor
  announce one whose change did not commit. The dispatcher reads it as any feed
  consumer does (connector.feed, whose (txid, id) cursor never skips nor repeats an
  event, even with out-of-order commits on PostgreSQL). Nothing is added to the SCIM
  and sync write path: no row per delivery, so writes cost the same with webhooks on.
- **At least once.** Each endpoint keeps its own feed position; it moves only in the
  transaction that records a 2xx answer. A crash, a timeout or a lost answer after the
  receiver took a message means the message is sent again. Receivers dedupe by the
  event id (`evt_…`, in every message) or by the `webhook-id` header.
- **In order.** Each endpoint is one ordered stream: its events are sent in feed order,
  one message at a time, and a failing message blocks the endpoint's later events until
  it succeeds (or the endpoint is disabled; enabling resumes from the same place). So a
  later event of a user never arrives before an earlier one.
- **Batched when behind.** One event: a single-event message. Several waiting: up to
  `webhooks.max_batch` in one "batch" message, oldest first (connector.webhooks.messages).

    service.py     endpoints, secrets, the delivery log (the caller's session)
    messages.py    the message envelope, ids and signature headers
    sender.py      URL rules and one HTTP POST (SSRF guard: connector.outbound)
    schedule.py    retry backoff and Retry-After (pure)
    dispatcher.py  leases, reading the feed, recording attempts, disabling
    runner.py      the loop in `connector worker` and the web process
"""
