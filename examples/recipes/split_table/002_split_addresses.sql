-- Expand: addresses move to their own table. While both releases run, the old one reads
-- and writes users.street and users.city, the new one addresses; two triggers copy each
-- side's writes to the other (pg_trigger_depth() stops a copy from being copied back).
CREATE TABLE addresses (
    user_id bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    street text,
    city text
);

CREATE FUNCTION users_address_to_addresses() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF pg_trigger_depth() > 1 THEN
        RETURN NULL;  -- this row was written by addresses_to_users
    END IF;
    INSERT INTO addresses (user_id, street, city) VALUES (NEW.id, NEW.street, NEW.city)
    ON CONFLICT (user_id) DO UPDATE SET street = excluded.street, city = excluded.city;
    RETURN NULL;
END
$$;

-- The new release inserts users without an address: only the old release's rows with one.
CREATE TRIGGER users_address_inserted
    AFTER INSERT ON users
    FOR EACH ROW WHEN (new.street IS NOT NULL OR new.city IS NOT NULL)
    EXECUTE FUNCTION users_address_to_addresses();

CREATE TRIGGER users_address_updated
    AFTER UPDATE OF street, city ON users
    FOR EACH ROW EXECUTE FUNCTION users_address_to_addresses();

CREATE FUNCTION addresses_to_users() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF pg_trigger_depth() > 1 THEN
        RETURN NULL;  -- a copy from users, or the cascade of a deleted user
    END IF;
    IF TG_OP = 'DELETE' THEN
        UPDATE users SET street = NULL, city = NULL WHERE id = OLD.user_id;
    ELSE
        UPDATE users SET street = NEW.street, city = NEW.city WHERE id = NEW.user_id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER addresses_to_users
    AFTER INSERT OR UPDATE OR DELETE ON addresses
    FOR EACH ROW EXECUTE FUNCTION addresses_to_users();

-- The addresses written before the triggers.
INSERT INTO addresses (user_id, street, city)
SELECT id, street, city FROM users WHERE street IS NOT NULL OR city IS NOT NULL
ON CONFLICT (user_id) DO NOTHING;
