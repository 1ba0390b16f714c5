-- Idempotency-Key: a client's key names the job its first request made, for 24 h. `body` is
-- the request as parsed, so a replay with another body is told apart.
CREATE TABLE idempotency (
    client        TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    body          TEXT    NOT NULL,
    job_id        TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (client, key)
);
CREATE INDEX idempotency_by_age ON idempotency (created_at_ms);
