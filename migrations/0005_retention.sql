-- Jobs deleted by retention leave their id behind for a while, so that they answer
-- "410 expired" rather than "404 not found".
CREATE TABLE expired (
    id            TEXT    PRIMARY KEY,
    expired_at_ms INTEGER NOT NULL
);
CREATE INDEX expired_by_age ON expired (expired_at_ms);
