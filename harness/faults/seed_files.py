"""Big migration files for tests and benchmarks, written to disk a statement at a time."""

from __future__ import annotations

from pathlib import Path

_PAD = "lorem ipsum; dolor sit amet, it''s a \"quoted\" value " * 8
_COPY_PAD = 'lorem ipsum; dolor\\tsit amet, it\'s a \\\\ "quoted" value ' * 8


def write_insert_seed(path: Path, size: int) -> int:
    """A CREATE TABLE and INSERTs of 1,000 rows until ``size`` bytes; returns the rows."""
    rows = 0
    with path.open("w", encoding="utf-8") as file:
        file.write("CREATE TABLE seed (id bigint PRIMARY KEY, name text, body text);\n")
        while file.tell() < size:
            values = ",\n".join(f"({rows + i}, 'name {rows + i} é', '{_PAD}')" for i in range(1000))
            file.write(f"INSERT INTO seed (id, name, body) VALUES\n{values};\n")
            rows += 1000
    return rows


def write_copy_seed(path: Path, size: int) -> int:
    """The same table as pg_dump writes its data: one COPY section until ``size`` bytes."""
    rows = 0
    with path.open("w", encoding="utf-8") as file:
        file.write("CREATE TABLE seed (id bigint PRIMARY KEY, name text, body text);\n")
        file.write("COPY public.seed (id, name, body) FROM stdin;\n")
        while file.tell() < size:
            file.write(
                "".join(f"{rows + i}\tname {rows + i} é\t{_COPY_PAD}\n" for i in range(1000))
            )
            rows += 1000
        file.write("\\.\n")
    return rows
