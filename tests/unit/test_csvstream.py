"""CsvBody: header checks, byte-exact re-serving, and the ``\\.`` end-of-copy guard."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickets_ingest.core.csvstream import CsvBody
from tickets_ingest.errors import FileRejected

KEY = "automations/inc/changes/2026-06-22T15-50-39.csv"
BOM = b"\xef\xbb\xbf"
HEADER = b"ticket_id,region,updated_at\n"
ROWS = b"T1,Nairobi,2026-06-22 15:00:00\nT2,Coast,2026-06-22 15:01:00\n"
LIMIT = 64 * 1024


class Source:
    """A readable whose ``read(n)`` hands out at most ``chunk`` bytes at a time."""

    def __init__(self, data: bytes, chunk: int = 8192) -> None:
        self.data = data
        self.chunk = chunk
        self.position = 0
        self.calls: list[int] = []

    def read(self, size: int = -1, /) -> bytes:
        self.calls.append(size)
        if size < 0:
            size = len(self.data)
        out = self.data[self.position : self.position + min(size, self.chunk)]
        self.position += len(out)
        return out


def serve(body: CsvBody, read_size: int = 8192) -> bytes:
    """Drain ``body`` the way COPY's source is drained: fixed-size reads until b""."""
    out = bytearray()
    buffer = bytearray(read_size)
    while True:
        n = body.readinto(buffer)
        if n == 0:
            return bytes(out)
        out += buffer[:n]


def open_body(data: bytes, chunk: int = 8192, **kwargs: object) -> CsvBody:
    return CsvBody(KEY, Source(data, chunk), **kwargs)  # type: ignore[arg-type]


def rejected(data: bytes, chunk: int = 8192, read_size: int = 8192) -> FileRejected:
    with pytest.raises(FileRejected) as info:
        serve(open_body(data, chunk), read_size)
    assert info.value.key == KEY
    return info.value


class TestHeader:
    def test_parsed(self) -> None:
        body = open_body(HEADER + ROWS)
        assert body.header == ["ticket_id", "region", "updated_at"]
        assert body.key == KEY

    def test_bom_stripped(self) -> None:
        assert open_body(BOM + HEADER + ROWS).header == ["ticket_id", "region", "updated_at"]

    @pytest.mark.parametrize("chunk", [1, 2, 3])
    def test_bom_split_across_reads(self, chunk: int) -> None:
        body = open_body(BOM + HEADER + ROWS, chunk)
        assert body.header == ["ticket_id", "region", "updated_at"]
        assert serve(body) == HEADER + ROWS

    def test_crlf(self) -> None:
        assert open_body(b"a,b\r\n1,2\r\n").header == ["a", "b"]

    def test_quoted_names(self) -> None:
        assert open_body(b'"a","b,c", d \n').header == ["a", "b,c", " d "]

    def test_non_ascii_utf8(self) -> None:
        assert open_body("région,ñ\n".encode()).header == ["région", "ñ"]

    def test_header_only_without_newline(self) -> None:
        body = open_body(b"a,b,c")
        assert body.header == ["a", "b", "c"]
        assert serve(body) == b"a,b,c"

    def test_blank_first_line(self) -> None:
        assert open_body(b"\nrow\n").header == []

    def test_bom_only(self) -> None:
        body = open_body(BOM)
        assert body.header == []
        assert serve(body) == b""
        assert body.bytes_read == 3

    def test_empty_object(self) -> None:
        with pytest.raises(FileRejected, match="empty object") as info:
            open_body(b"")
        assert info.value.key == KEY

    @pytest.mark.parametrize("chunk", [7, 8192])
    def test_no_newline_in_first_64_kib(self, chunk: int) -> None:
        with pytest.raises(FileRejected, match="64 KiB") as info:
            open_body(b"a" * (LIMIT + 1) + b"\nrow\n", chunk)
        assert info.value.line == 1
        assert info.value.key == KEY

    def test_long_header_without_any_newline(self) -> None:
        source = Source(b"x" * (4 * LIMIT))
        with pytest.raises(FileRejected, match="64 KiB"):
            CsvBody(KEY, source)
        assert source.position <= LIMIT + 8192  # stops reading soon after the limit

    @pytest.mark.parametrize("chunk", [4096, 8192])
    def test_newline_as_last_byte_of_the_first_64_kib(self, chunk: int) -> None:
        data = b"a" * (LIMIT - 1) + b"\n" + ROWS
        body = open_body(data, chunk)
        assert body.header == ["a" * (LIMIT - 1)]
        assert serve(body) == data

    def test_newline_just_past_the_first_64_kib(self) -> None:
        with pytest.raises(FileRejected, match="64 KiB"):
            open_body(b"a" * LIMIT + b"\n" + ROWS)

    @pytest.mark.parametrize("chunk", [1000, 4096, 5000, 8192])
    def test_header_limit_does_not_depend_on_read_sizes(self, chunk: int) -> None:
        # The header line (65,000 bytes) ends well within 64 KiB, however the source
        # happens to split its reads.
        data = b"h" * 65_000 + b"\n" + b"row\n" * 500
        body = open_body(data, chunk)
        assert body.header == ["h" * 65_000]
        assert serve(body) == data

    @pytest.mark.parametrize(
        ("line", "byte"),
        [(b"ticket_id,r\xe9gion\n", "0xe9"), (b"\xff\xfe,a\n", "0xff"), (b"a,\xc3\n", "0xc3")],
    )
    def test_not_utf8(self, line: bytes, byte: str) -> None:
        with pytest.raises(FileRejected, match="not UTF-8") as info:
            open_body(line + ROWS)
        assert byte in info.value.reason
        assert info.value.line == 1

    def test_utf16_is_rejected(self) -> None:
        with pytest.raises(FileRejected, match="not UTF-8"):
            open_body("a,b\n1,2\n".encode("utf-16"))

    def test_nul_in_header(self) -> None:
        with pytest.raises(FileRejected, match="NUL") as info:
            open_body(b"a,\x00b\n" + ROWS)
        assert info.value.line == 1

    def test_bare_carriage_return_in_header(self) -> None:
        with pytest.raises(FileRejected, match="not valid CSV") as info:
            open_body(b"a,b\rc\n")
        assert info.value.line == 1

    def test_only_data_rows_need_not_be_utf8(self) -> None:
        # PostgreSQL checks the encoding of the data; the wrapper only checks the header.
        data = HEADER + b"T1,\xff,x\n"
        assert serve(open_body(data)) == data


class TestServing:
    @pytest.mark.parametrize("chunk", [1, 2, 3, 5, 64, 8192])
    def test_serves_the_whole_file(self, chunk: int) -> None:
        data = HEADER + ROWS * 3
        for read_size in (1, 2, 3, 7, 8192):
            body = open_body(data, chunk)
            assert serve(body, read_size) == data, read_size
            assert body.bytes_read == len(data)

    @pytest.mark.parametrize("chunk", [1, 2, 3, 8192])
    def test_bom_removed_but_counted(self, chunk: int) -> None:
        body = open_body(BOM + HEADER + ROWS, chunk)
        assert serve(body, 5) == HEADER + ROWS
        assert body.bytes_read == len(BOM + HEADER + ROWS)

    def test_only_the_leading_bom_is_removed(self) -> None:
        data = HEADER + b"T1," + BOM + b"x,y\n"
        assert serve(open_body(BOM + data)) == data

    def test_bytes_read_after_construction_counts_the_header_read(self) -> None:
        body = open_body(HEADER + ROWS, chunk=4)
        assert body.bytes_read == 28  # seven 4-byte reads to reach the header's newline
        assert len(HEADER) == 28

    def test_progress_reported(self) -> None:
        seen: list[int] = []
        data = HEADER + ROWS * 20
        body = open_body(data, chunk=3, on_progress=seen.append)
        assert serve(body, 16) == data
        assert seen
        assert seen == sorted(seen)
        assert seen[-1] == len(data)
        assert all(0 < n <= len(data) for n in seen)

    def test_progress_for_a_file_read_whole_with_the_header(self) -> None:
        seen: list[int] = []
        body = open_body(HEADER + ROWS, on_progress=seen.append)
        serve(body)
        assert seen
        assert seen[-1] == len(HEADER + ROWS)

    def test_no_progress_callback_is_fine(self) -> None:
        assert serve(open_body(HEADER + ROWS, chunk=2)) == HEADER + ROWS

    def test_eof_is_sticky(self) -> None:
        body = open_body(HEADER)
        assert serve(body) == HEADER
        assert body.readinto(bytearray(10)) == 0
        assert body.readinto(bytearray(10)) == 0

    def test_works_as_a_raw_io_stream(self) -> None:
        data = BOM + HEADER + ROWS * 50
        body = open_body(data, chunk=3)
        assert body.readable()
        assert io.BufferedReader(body, buffer_size=7).read() == data[3:]

    def test_read_and_readall(self) -> None:
        body = open_body(HEADER + ROWS, chunk=5)
        first = body.read(4)
        assert first == HEADER[:4]
        assert first + body.readall() == HEADER + ROWS

    def test_readinto_memoryview(self) -> None:
        body = open_body(HEADER + ROWS)
        buffer = bytearray(len(HEADER) + len(ROWS) + 10)
        n = body.readinto(memoryview(buffer))
        assert buffer[:n] == (HEADER + ROWS)[:n]
        assert n > 0

    def test_holds_at_most_one_chunk_beyond_the_header(self) -> None:
        source = Source(HEADER + ROWS * 1000)
        body = CsvBody(KEY, source)
        body.readinto(bytearray(100))
        assert source.position <= 8192


# The end-of-copy marker: a line holding only ``\.``.

MARKER_FILES = [
    HEADER + b"T1,a,b\n\\.\nT2,c,d\n",  # in the middle
    HEADER + b"\\.\nT2,c,d\n",  # first line after the header
    HEADER + b"T1,a,b\n\\.",  # at EOF without a newline
    HEADER + b"T1,a,b\n\\.\n",  # last line
    HEADER + b"T1,a,b\r\n\\.\r\nT2,c,d\r\n",  # CRLF
    HEADER + b"T1,a,b\n\\.\r",  # bare CR after the marker at EOF
    BOM + HEADER + b"\\.\n",
]


class TestEndOfCopyMarker:
    @pytest.mark.parametrize("data", MARKER_FILES)
    def test_rejected(self, data: bytes) -> None:
        for chunk in (1, 2, 3, 8192):
            for read_size in (1, 3, 8192):
                error = rejected(data, chunk, read_size)
                assert "\\." in error.reason

    @pytest.mark.parametrize("chunk", [8192, 1000, 4096])
    def test_rejected_far_beyond_the_first_read(self, chunk: int) -> None:
        rejected(HEADER + ROWS * 400 + b"\\.\n" + ROWS, chunk, read_size=8192)

    def test_rejected_only_when_read_up_to_the_marker(self) -> None:
        body = open_body(HEADER + ROWS * 400 + b"\\.\n" + ROWS)
        assert body.read(len(HEADER)) == HEADER  # construction and early reads are fine
        with pytest.raises(FileRejected):
            body.readall()

    def test_rejected_wherever_the_reads_split(self) -> None:
        # Make a read boundary fall at every position around the marker.
        for offset in range(12):
            data = HEADER + b"x" * offset + b"\n\\.\n" + ROWS
            for chunk in range(1, 9):
                rejected(data, chunk, read_size=chunk + 1)

    @pytest.mark.parametrize(
        "data",
        [
            HEADER + b"T1,\\.,b\n",  # a field, not a line
            HEADER + b"\\.x\n",
            HEADER + b"\\..\n",
            HEADER + b"x\\.\n",
            HEADER + b" \\.\n",
            HEADER + b'"\\."\n',  # quoted: COPY does not treat it as the marker
            HEADER + b"\\\\.\n",
            HEADER + b"\\\n.\n",
            HEADER + b"T1,a,b\n\\",
            HEADER + b"T1,a,b\n.",
        ],
    )
    def test_look_alikes_pass(self, data: bytes) -> None:
        for chunk in (1, 2, 3, 8192):
            assert serve(open_body(data, chunk), 3) == data, chunk

    @pytest.mark.parametrize(
        "data",
        [
            HEADER + b'T1,"line one\n\\.\nline three",b\n',  # a quoted multi-line value
            HEADER + b'T1,"a\r\n\\.\r\nb",b\r\n',  # the same with CRLF
            HEADER + b'T1,"\n\\.",b\n',  # the marker line ends at the closing quote
            HEADER + b'T1,"say ""hi""\n\\.\n",b\n',  # escaped quotes before it
            HEADER + b'T1,"x\n\\.',  # inside a quote left open at EOF (COPY refuses it)
        ],
    )
    def test_a_marker_line_inside_quotes_is_data(self, data: bytes) -> None:
        for chunk in (1, 2, 3, 5, 8192):
            for read_size in (1, 3, 8192):
                assert serve(open_body(data, chunk), read_size) == data, (chunk, read_size)

    @pytest.mark.parametrize(
        "data",
        [
            HEADER + b'T1,"quoted\nvalue",b\n\\.\nT2,c,d\n',  # after a closed multi-line value
            HEADER + b'T1,"say ""hi""",b\n\\.\n',  # after escaped quotes
            HEADER + b'T1,"a",b\n"\n\\.\n"\n\\.\n',  # after a quoted line, outside again
        ],
    )
    def test_a_marker_line_after_quotes_close_is_rejected(self, data: bytes) -> None:
        for chunk in (1, 2, 3, 5, 8192):
            for read_size in (1, 3, 8192):
                assert "\\." in rejected(data, chunk, read_size).reason


# --- properties ---------------------------------------------------------------------------

header_text = st.lists(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz_ ", min_size=1, max_size=12),
    min_size=1,
    max_size=8,
).map(",".join)


def without_marker(data: bytes) -> bytes:
    while b"\n\\." in data:
        data = data.replace(b"\n\\.", b"\n\\x")
    return data


def without_trailing_blank_lines(data: bytes) -> bytes:
    """What CsvBody serves: blank lines after the file's last line end are left out."""
    kept = data.rstrip(b"\r\n")
    ends = data[len(kept) :]
    return kept + (b"\r\n" if ends.startswith(b"\r\n") else ends[:1])


def test_trailing_blank_lines_are_left_out() -> None:
    data = HEADER + ROWS + b"\r\n\r\n\n"
    assert serve(open_body(data, 3), 5) == HEADER + ROWS  # ROWS ends with its line end
    inner = HEADER + b"a\n\n\nb\n"  # blank lines inside the file are passed on (COPY decides)
    assert serve(open_body(inner, 2), 3) == inner


@settings(max_examples=40, deadline=None, database=None)
@given(
    header=header_text,
    newline=st.sampled_from([b"\n", b"\r\n"]),
    rest=st.binary(max_size=300),
    bom=st.booleans(),
    chunk=st.integers(1, 40),
    read_size=st.integers(1, 40),
)
def test_reserves_exactly_the_input(
    header: str, newline: bytes, rest: bytes, bom: bool, chunk: int, read_size: int
) -> None:
    data = without_marker(header.encode() + newline + rest)
    seen: list[int] = []
    source = Source((BOM if bom else b"") + data, chunk)
    body = CsvBody(KEY, source, on_progress=seen.append)
    assert body.header == header.split(",")
    assert serve(body, read_size) == without_trailing_blank_lines(data)
    assert body.bytes_read == len(source.data)
    assert seen == sorted(seen)
    assert seen[-1] == len(source.data)


@settings(max_examples=40, deadline=None, database=None)
@given(
    lines=st.lists(st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"")), max_size=10),
    position=st.integers(0, 10),
    ending=st.sampled_from([b"\n", b"\r\n", b""]),
    chunk=st.integers(1, 12),
    read_size=st.integers(1, 12),
)
def test_marker_line_rejected_exactly_when_outside_quotes(
    lines: list[bytes], position: int, ending: bytes, chunk: int, read_size: int
) -> None:
    position = min(position, len(lines))
    before = b"".join(line + b"\n" for line in lines[:position])
    after = b"".join(line + b"\n" for line in lines[position:]) if ending else b""
    # Only the marker under test: any other (quoted or not) would decide the outcome.
    prefix = without_marker(HEADER + before)
    data = prefix + b"\\." + without_marker(ending + after)
    if prefix.count(b'"') % 2 == 0:
        rejected(data, chunk, read_size)
    else:  # inside a quoted value: data, as COPY reads it
        assert serve(open_body(data, chunk), read_size) == without_trailing_blank_lines(data)
