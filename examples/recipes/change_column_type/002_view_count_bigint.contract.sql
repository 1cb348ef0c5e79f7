-- Contract: no replica of the release that knows only views is alive.
ALTER TABLE articles VALIDATE CONSTRAINT articles_view_count_not_null;
DROP TRIGGER articles_view_count_sync ON articles;
DROP FUNCTION articles_view_count_sync();
ALTER TABLE articles DROP COLUMN views;
ALTER TABLE articles ALTER COLUMN view_count SET DEFAULT 0;
