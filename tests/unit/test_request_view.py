"""api/request_view.py reads queries and headers as werkzeug (Quart's) does, so the fast path
and Quart routes see the same request; checked against werkzeug itself on awkward input."""

from __future__ import annotations

import pytest
from werkzeug.datastructures import Headers as WerkzeugHeaders
from werkzeug.sansio.request import Request

from api.request_view import Headers, QueryArgs

QUERIES = [
    b"", b"a=1", b"a=1&a=2&b=", b"a", b"a=&=b", b"x=%ZZ&y=%41", b"q=a+b%20c", b"u=%C3%A9t%C3%A9",
    b"bad=%C3%28", b"k=v;w=z", b"raw=\xc3\xa9", b"&&a=1&&", b"status=open&limit=10&next_page_token=abc%3D%3D",
]


@pytest.mark.parametrize("query", QUERIES)
def test_query_args_match_werkzeug(query: bytes) -> None:
    ours = QueryArgs(query)
    theirs = Request("GET", "http", ("localhost", 80), "", "/", query, WerkzeugHeaders(), None).args
    assert ours.lists() == list(theirs.lists())
    assert ours.to_dict() == {k: theirs[k] for k in theirs}
    for name in theirs:
        assert ours.get(name) == theirs.get(name)
    assert ours.get("absent", "d") == "d"


def test_a_query_that_is_not_utf8_fails_as_in_werkzeug() -> None:
    with pytest.raises(UnicodeDecodeError):
        QueryArgs(b"bad=\xff")
    with pytest.raises(UnicodeDecodeError):
        Request("GET", "http", ("localhost", 80), "", "/", b"bad=\xff", WerkzeugHeaders(), None).args  # noqa: B018


def test_headers_are_case_insensitive_and_the_first_value_wins_as_in_werkzeug() -> None:
    raw = [(b"X-Namespace", b"one"), (b"x-namespace", b"two"), (b"Content-Type", b"application/json")]
    ours = Headers.from_asgi(raw)
    theirs = WerkzeugHeaders([(k.decode(), v.decode()) for k, v in raw])
    for name in ("x-namespace", "X-NAMESPACE", "content-type", "Missing"):
        assert ours.get(name) == theirs.get(name), name
    assert "CONTENT-TYPE" in ours and "missing" not in ours
