-- Contract: no replica of the release that leaves currency out is alive; from now on an
-- insert without a currency fails instead of quietly getting EUR.
ALTER TABLE orders ALTER COLUMN currency DROP DEFAULT;
