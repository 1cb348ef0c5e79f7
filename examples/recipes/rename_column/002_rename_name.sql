-- Expand: accounts.name becomes accounts.display_name. While both releases run, the old
-- one reads and writes name, the new one display_name; the trigger keeps them equal.
ALTER TABLE accounts ADD COLUMN display_name text;

CREATE FUNCTION accounts_display_name_sync() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.display_name IS NULL THEN
            NEW.display_name := NEW.name;  -- the old release's insert
        ELSE
            NEW.name := NEW.display_name;  -- the new release's insert
        END IF;
    ELSIF NEW.display_name IS DISTINCT FROM OLD.display_name THEN
        NEW.name := NEW.display_name;
    ELSE
        NEW.display_name := NEW.name;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER accounts_display_name_sync
    BEFORE INSERT OR UPDATE ON accounts
    FOR EACH ROW EXECUTE FUNCTION accounts_display_name_sync();

-- The rows written before the trigger (a large table: backfill in batches instead).
UPDATE accounts SET display_name = name WHERE display_name IS NULL;

-- name is NOT NULL: so is display_name, for every row written from now on (the contract
-- part validates the rows before). NOT VALID takes the lock for a moment, without a scan.
ALTER TABLE accounts
    ADD CONSTRAINT accounts_display_name_not_null CHECK (display_name IS NOT NULL) NOT VALID;
