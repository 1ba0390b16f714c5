-- The submitter's proof of ownership: a cancel needs its visitor cookie or this token.
-- Jobs from before have none: only their visitor may cancel them.
ALTER TABLE jobs ADD COLUMN cancel_token TEXT;
