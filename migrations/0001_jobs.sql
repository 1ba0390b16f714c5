-- One row per accepted job. `seq` orders the queue (FIFO); `id` is the public, random handle.
CREATE TABLE jobs (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT    NOT NULL UNIQUE,
    status           TEXT    NOT NULL CHECK (status IN ('queued', 'processing', 'completed', 'failed', 'cancelled')),
    params           TEXT    NOT NULL, -- JSON of the resolved parameters
    steps            INTEGER NOT NULL,
    client           TEXT    NOT NULL,
    visitor          TEXT,
    step             INTEGER NOT NULL DEFAULT 0,
    preview_step     INTEGER,
    attempts         INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    error_kind       TEXT,
    error_message    TEXT,
    created_at_ms    INTEGER NOT NULL,
    started_at_ms    INTEGER,
    finished_at_ms   INTEGER,
    inference_ms     INTEGER
);
CREATE INDEX jobs_by_status ON jobs (status, seq);
CREATE INDEX jobs_by_client ON jobs (client, status);
CREATE INDEX jobs_by_visitor ON jobs (visitor, seq);
