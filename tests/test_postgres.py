"""PostgreSQL: COPY (binary and CSV), NUL and invalid UTF-8, an unreachable database."""
import pytest

from tootpipe.postgres import db


def test_text_reaches_postgresql_without_nul_characters_or_invalid_utf8():
    import pyarrow as pa

    from tootpipe.postgres.db import pg_safe

    def safe(col):
        return pg_safe(pa.table({"c": col}))["c"]

    clean = pa.chunked_array([pa.array(["a", None, "ü ✓"])])
    assert safe(clean).chunk(0).buffers()[2].address == clean.chunk(0).buffers()[2].address  # passed, not copied
    outside = pa.chunked_array([pa.array(["x\x00y", "ok", "fine"]).slice(1)])  # the NUL lies outside the slice
    assert safe(outside).to_pylist() == ["ok", "fine"]
    inside = pa.chunked_array([pa.array(["ok", "x\x00y", "z"]).slice(1), pa.array(["\x00"])])
    assert safe(inside).to_pylist() == ["xy", "z", ""]
    broken = pa.array([b"ok", b"bad \xff byte"], pa.binary()).cast(pa.string(), safe=False)
    assert safe(pa.chunked_array([broken])).to_pylist() == ["ok", "bad \ufffd byte"]
    lists = pa.chunked_array([pa.array([["a\x00b", None], None, ["c"]], pa.list_(pa.string()))])
    assert safe(lists).to_pylist() == [["ab", None], None, ["c"]]


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_binary_and_csv_copies_store_the_same_values(fresh):
    import platform
    from datetime import datetime, timezone

    import pyarrow as pa
    _, endpoints = fresh
    if platform.machine() != "aarch64":  # pgpq has wheels everywhere else: the binary path must be there
        assert db.binary_copy_available()
    t = datetime(2026, 11, 26, 1, 2, 3, 456789, tzinfo=timezone.utc)
    table = pa.table({
        "s": pa.array(["plain", "", None, "nul\x00inside", 'quote " and , comma', "ünï ✓\nline"]),
        "a": pa.array(['{"x","y z"}', "{}", None, '{"\\\\"}', '{""}', '{"NULL"}']),  # array literals, as staged
        "h": pa.array([["x", 'q "uote', "back\\slash"], [], None, ["nul\x00in", None], ["", "NULL"], ["{a,b}", "ü ✓"]],
                      pa.list_(pa.string())),  # Arrow lists (the backfill's hashtags)
        "i": pa.array([1, -2, None, 2**31 - 1, 0, 5], pa.int32()),
        "l": pa.array([2**40, None, -1, 0, 1, 2], pa.int64()),
        "b": pa.array([True, False, None, True, False, True]),
        "t": pa.array([t, None, t, t, t, t], pa.timestamp("us", tz="UTC"))})
    got = {}
    with db.transaction(endpoints.database_url) as conn, conn.cursor() as cur:
        for name, binary, part in (("as_binary", True, table), ("as_csv", False, table),
                                   ("sliced_binary", True, table.slice(2)), ("sliced_csv", False, table.slice(2))):
            cur.execute(f"CREATE TEMP TABLE {name} (n serial, s text, a text, h text[], i int, l bigint, "
                        "b boolean, t timestamptz)")
            assert db.copy_arrow(cur, name, part, binary=binary) == part.num_rows
            cur.execute(f"SELECT s, a::text[], i, l, b, t, h FROM {name} ORDER BY n")
            got[name] = cur.fetchall()
    assert got["as_binary"] == got["as_csv"]
    assert got["sliced_binary"] == got["sliced_csv"] == got["as_csv"][2:]  # lists whose offsets start past 0
    rows = got["as_binary"]
    assert [r[0] for r in rows[:4]] == ["plain", "", None, "nulinside"] and rows[3][1] == ["\\"]
    assert rows[0][5] == t and rows[0][3] == 2**40 and rows[3][2] == 2**31 - 1
    assert [r[6] for r in rows] == [["x", 'q "uote', "back\\slash"], [], None, ["nulin", None], ["", "NULL"],
                                    ["{a,b}", "ü ✓"]]


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_unreachable_database_is_a_clear_error():
    with pytest.raises(db.DatabaseUnavailable, match="cannot reach PostgreSQL at 127.0.0.1:9"):
        db.connect("postgresql://postgres:secret@127.0.0.1:9/x")
