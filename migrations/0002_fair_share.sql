-- Fair share: the queue is served by (round, seq) instead of seq alone. A client's job joins
-- the round after its previous job's, but never a round already served (`fair_clock`).
-- `model` lets a worker claim only the models it offers.
ALTER TABLE jobs ADD COLUMN model TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN round INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET model = json_extract(params, '$.model');
CREATE TABLE fair_clock (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    round INTEGER NOT NULL
);
INSERT INTO fair_clock (id, round) VALUES (1, 0);
CREATE INDEX jobs_by_round ON jobs (status, round, seq);
CREATE INDEX jobs_by_client_round ON jobs (client, round);
