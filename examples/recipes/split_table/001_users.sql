-- Before: the release before the split keeps each user's address in users.
CREATE TABLE users (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    street text,
    city text
);
