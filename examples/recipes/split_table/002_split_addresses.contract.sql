-- Contract: no replica of the release that reads users.street is alive.
DROP TRIGGER addresses_to_users ON addresses;
DROP FUNCTION addresses_to_users();
DROP TRIGGER users_address_inserted ON users;
DROP TRIGGER users_address_updated ON users;
DROP FUNCTION users_address_to_addresses();
ALTER TABLE users DROP COLUMN street, DROP COLUMN city;
