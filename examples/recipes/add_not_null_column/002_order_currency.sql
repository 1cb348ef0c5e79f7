-- Expand: orders get a required currency. The old release's inserts leave it out and get
-- the default; PostgreSQL 11+ stores a constant default once, without rewriting the table,
-- and every existing row reads it.
ALTER TABLE orders ADD COLUMN currency text NOT NULL DEFAULT 'EUR';
