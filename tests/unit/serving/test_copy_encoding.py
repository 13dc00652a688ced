"""The CSV that ``serving.db.copy_rows`` sends to COPY: nothing in a value can be read as NULL, a separator or the
end of the data, and a value PostgreSQL cannot store is refused before anything is sent.

(The round trip through a real PostgreSQL is in tests/integration/test_fuzz_path.py.)
"""

import datetime as dt
from decimal import Decimal

import numpy as np
import pytest

from serving.db import UnstorableValue, copy_rows


class RecordingCursor:
    def __init__(self):
        self.sent: list[tuple[str, str]] = []

    def copy_expert(self, sql, file):
        self.sent.append((sql, file.read()))


def sent_csv(rows, columns=("a", "b")) -> str:
    cur = RecordingCursor()
    copy_rows(cur, "t", columns, rows)
    (sql, text), *_ = cur.sent
    assert sql == "COPY t (a, b) FROM STDIN WITH (FORMAT csv, NULL '\\N')"
    return text


def test_only_null_is_unquoted_and_every_text_is_quoted_as_it_is():
    rows = [
        (None, "\\N"),  # NULL, then the two characters backslash and N
        ('say "hi", ok', "line\nbreak\r\n"),
        ("\\.", ""),  # COPY's end-of-data marker, and an empty string (not NULL)
        (Decimal("12.30"), dt.datetime(2026, 1, 2, 3, 4, 5, 600000)),
        (True, 7),
    ]
    expected = (
        '\\N,"\\N"\n"say ""hi"", ok","line\nbreak\r\n"\n"\\.",""\n"12.30","2026-01-02 03:04:05.600000"\n"True","7"\n'
    )
    assert sent_csv(rows) == expected


def test_lists_become_array_literals_with_every_element_quoted_or_null():
    rows = [(["a,b", '{"x"}', "back\\slash", None, "NULL"], np.array(["one"], dtype=object)), ([], None)]
    # element: a,b -> "a,b"; {"x"} -> "{\"x\"}"; back\slash -> "back\\slash"; None -> NULL; the text NULL quoted.
    # Then the whole literal is one CSV field: its quotes doubled.
    literal = '{"a,b","{\\"x\\"}","back\\\\slash",NULL,"NULL"}'
    expected = '"' + literal.replace('"', '""') + '","{""one""}"\n"{}",\\N\n'
    assert sent_csv(rows) == expected


@pytest.mark.parametrize(
    "rows, row, column",
    [
        ([("ok", "ok"), ("ok", "D\x001")], 1, "b"),
        ([(["fine", "bad\x00"], "ok")], 0, "a"),
        ([("\x00", None)], 0, "a"),
    ],
)
def test_a_nul_character_is_refused_naming_where_it_is_and_nothing_is_sent(rows, row, column):
    cur = RecordingCursor()
    with pytest.raises(UnstorableValue) as refused:
        copy_rows(cur, "transactions", ("a", "b"), rows)
    assert (refused.value.table, refused.value.row, refused.value.column) == ("transactions", row, column)
    assert refused.value.pgcode == "22021"  # what PostgreSQL answers for U+0000: callers treat both alike
    assert "\x00" not in str(refused.value)
    assert cur.sent == []
