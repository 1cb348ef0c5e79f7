-- Before: the release before the change knows one currency and does not write it.
CREATE TABLE orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer text NOT NULL,
    total_cents bigint NOT NULL
);
