-- Expand: articles.views (integer) becomes articles.view_count (bigint). A column cannot
-- have two types at once, so the new type gets a new name; while both releases run, the
-- old one reads and writes views, the new one view_count, and the trigger keeps them equal.
-- Until the contract part, a count above 2147483647 fails the write: views must hold it.
ALTER TABLE articles ADD COLUMN view_count bigint;

CREATE FUNCTION articles_view_count_sync() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.view_count IS NULL THEN
            NEW.view_count := NEW.views;  -- the old release's insert
        ELSE
            NEW.views := NEW.view_count;  -- the new release's insert
        END IF;
    ELSIF NEW.view_count IS DISTINCT FROM OLD.view_count THEN
        NEW.views := NEW.view_count;
    ELSE
        NEW.view_count := NEW.views;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER articles_view_count_sync
    BEFORE INSERT OR UPDATE ON articles
    FOR EACH ROW EXECUTE FUNCTION articles_view_count_sync();

-- The rows written before the trigger (a large table: backfill in batches instead).
UPDATE articles SET view_count = views WHERE view_count IS NULL;

-- views is NOT NULL: so is view_count for every row written from now on.
ALTER TABLE articles
    ADD CONSTRAINT articles_view_count_not_null CHECK (view_count IS NOT NULL) NOT VALID;
