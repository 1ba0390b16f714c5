-- Webhooks: where a job's end is announced, and how its delivery goes: attempts so far, when
-- the next one is due (pushed ahead as a lease while an attempt is under way), and how it ended
-- ('delivered' or 'failed'; NULL while still to do).
ALTER TABLE jobs ADD COLUMN webhook TEXT;
ALTER TABLE jobs ADD COLUMN webhook_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN webhook_due_at_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN webhook_state TEXT;
CREATE INDEX jobs_webhooks_due ON jobs (webhook_due_at_ms) WHERE webhook IS NOT NULL AND webhook_state IS NULL;
