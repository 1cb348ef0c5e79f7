-- Contract: no replica of the release that knows only name is alive.
-- First the scan, which blocks neither reads nor writes (no stronger lock is held yet).
ALTER TABLE accounts VALIDATE CONSTRAINT accounts_display_name_not_null;
DROP TRIGGER accounts_display_name_sync ON accounts;
DROP FUNCTION accounts_display_name_sync();
ALTER TABLE accounts DROP COLUMN name;
