"""Small bodies are read to their end under a cap, however they arrive: any split, any pauses."""
import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry_mirror.bodies import BodyError, read_body


class PiecewiseStream:
    """A fake aiohttp StreamReader: `read(n)` returns at most what has "arrived", one piece at a time, with
    the event loop run in between (as real reads yield while a segment is on its way)."""

    def __init__(self, pieces: list[bytes], yields: list[int]):
        self.pieces, self.yields = list(pieces), list(yields)
        self.buffered = b""

    async def read(self, n: int = -1) -> bytes:
        if not self.buffered and self.pieces:
            for _ in range(self.yields.pop(0) if self.yields else 0):
                await asyncio.sleep(0)
            self.buffered = self.pieces.pop(0)
        chunk, self.buffered = self.buffered[:n], self.buffered[n:]
        return chunk


def split(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts} | {0, len(body)})
    return [body[a:b] for a, b in zip(points, points[1:], strict=False) if b > a]


def read(pieces, cap, length=None, yields=()):
    return asyncio.run(read_body(PiecewiseStream(pieces, list(yields)), cap, length))


@given(body=st.binary(max_size=200_000), cuts=st.lists(st.integers(min_value=0), max_size=40),
       yields=st.lists(st.integers(min_value=0, max_value=3), max_size=40), with_length=st.booleans())
def test_any_split_of_any_body_reads_the_same_bytes(body, cuts, yields, with_length):
    assert read(split(body, cuts), 200_000, len(body) if with_length else None, yields) == body


@given(body=st.binary(min_size=1, max_size=5000), cuts=st.lists(st.integers(min_value=0), max_size=20),
       missing=st.integers(min_value=1, max_value=5000))
def test_a_body_shorter_than_its_length_is_an_error(body, cuts, missing):
    with pytest.raises(BodyError, match=rf"cut short: {len(body)} of {len(body) + missing} bytes"):
        read(split(body, cuts), 100_000, len(body) + missing)


@given(body=st.binary(min_size=101, max_size=5000), cuts=st.lists(st.integers(min_value=0), max_size=20))
def test_a_body_over_the_cap_is_an_error_whatever_its_pieces(body, cuts):
    with pytest.raises(BodyError, match="over the 100-byte cap"):
        read(split(body, cuts), 100)


async def test_a_promised_length_over_the_cap_is_refused_before_reading():
    stream = PiecewiseStream([b"x"], [])
    with pytest.raises(BodyError, match="body of 101 bytes is over the 100-byte cap"):
        await read_body(stream, 100, 101)
    assert stream.pieces == [b"x"]  # nothing was read
