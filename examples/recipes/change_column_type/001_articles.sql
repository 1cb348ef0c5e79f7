-- Before: the release before the change counts views in an integer column.
CREATE TABLE articles (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    title text NOT NULL,
    views integer NOT NULL DEFAULT 0
);
