"""The devkit's local services, for real: a PostgreSQL server and the moto server."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import boto3
import pg8000.native
import pytest
from botocore.exceptions import ClientError

from tickets_devkit.emulator import LocalAws, start_aws
from tickets_devkit.forwarder import forwarder_process
from tickets_devkit.postgres import LocalPostgres, start_postgres


@pytest.fixture(scope="module")
def pg() -> Iterator[LocalPostgres]:
    with start_postgres() as server:
        yield server


def connect(pg: LocalPostgres, database: str = "postgres") -> pg8000.native.Connection:
    return pg8000.native.Connection(
        user=pg.user, host=pg.host, port=pg.port, database=database, ssl_context=False
    )


def accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def test_postgres_answers(pg: LocalPostgres) -> None:
    con = connect(pg)
    try:
        [[version]] = con.run("SELECT version()")
        [[fsync]] = con.run("SHOW fsync")
    finally:
        con.close()
    assert version.startswith("PostgreSQL ")
    assert fsync == "off"
    assert pg.url("x") == f"postgresql://postgres@127.0.0.1:{pg.port}/x"


def test_create_database_from_template(pg: LocalPostgres) -> None:
    pg.create_database("tpl_devkit")
    con = connect(pg, "tpl_devkit")
    try:
        con.run("CREATE TABLE marker (id int PRIMARY KEY)")
        con.run("INSERT INTO marker VALUES (42)")
    finally:
        con.close()  # a template must have no sessions while it is copied

    url = pg.create_database("copy_devkit", template="tpl_devkit")
    assert url.endswith("/copy_devkit")
    con = connect(pg, "copy_devkit")
    try:
        assert con.run("SELECT id FROM marker") == [[42]]
    finally:
        con.close()

    # drop works even while a session is still connected
    lingering = connect(pg, "copy_devkit")
    pg.drop_database("copy_devkit")
    pg.drop_database("copy_devkit")  # absent: no error
    with pytest.raises(pg8000.native.Error):  # the session was terminated
        lingering.run("SELECT 1")
    con = connect(pg)
    try:
        names = {row[0] for row in con.run("SELECT datname FROM pg_database")}
    finally:
        con.close()
    assert "copy_devkit" not in names
    assert "tpl_devkit" in names


@pytest.mark.parametrize("name", ["Bad", "1abc", "a-b", "x; DROP DATABASE postgres", "a" * 64])
def test_database_names_are_validated(pg: LocalPostgres, name: str) -> None:
    with pytest.raises(ValueError):
        pg.create_database(name)
    with pytest.raises(ValueError):
        pg.create_database("fine_name", template=name)


def test_stop_removes_server_and_files() -> None:
    started = time.perf_counter()
    server = start_postgres(fsync=True, settings={"work_mem": "8MB"})
    elapsed = time.perf_counter() - started
    root = server.datadir.parent
    try:
        assert elapsed < 10  # ~0.7 s here; generous for slow CI machines
        con = connect(server)
        try:
            assert con.run("SHOW fsync") == [["on"]]
            assert con.run("SHOW work_mem") == [["8MB"]]
        finally:
            con.close()
        assert accepts_connections(server.host, server.port)
    finally:
        server.stop()
    assert not accepts_connections(server.host, server.port)
    assert not root.exists()
    server.stop()  # idempotent


@pytest.fixture
def aws() -> Iterator[LocalAws]:
    with start_aws() as emulator:
        yield emulator


def s3_client(aws: LocalAws) -> Any:
    env = aws.env()
    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=env["AWS_SESSION_TOKEN"],
    )


def test_aws_env(aws: LocalAws) -> None:
    assert aws.env() == {
        "AWS_ENDPOINT_URL": aws.endpoint_url,
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
    }
    assert aws.endpoint_url.startswith("http://127.0.0.1:")


def test_s3_roundtrip_and_reset(aws: LocalAws) -> None:
    s3 = s3_client(aws)
    s3.create_bucket(
        Bucket="devkit-bucket",
        CreateBucketConfiguration={"LocationConstraint": "eu-west-1"},
    )
    s3.put_object(Bucket="devkit-bucket", Key="a/b.csv", Body=b"x,y\n1,2\n")
    body = s3.get_object(Bucket="devkit-bucket", Key="a/b.csv")["Body"].read()
    assert body == b"x,y\n1,2\n"

    aws.reset()
    assert s3.list_buckets()["Buckets"] == []
    with pytest.raises(ClientError):
        s3.get_object(Bucket="devkit-bucket", Key="a/b.csv")


def test_aws_stop_closes_port() -> None:
    emulator = start_aws(region="us-east-1")
    host_port = emulator.endpoint_url.removeprefix("http://").rsplit(":", 1)
    assert emulator.env()["AWS_DEFAULT_REGION"] == "us-east-1"
    assert accepts_connections(host_port[0], int(host_port[1]))
    emulator.stop()
    emulator.stop()  # idempotent
    assert not accepts_connections(host_port[0], int(host_port[1]))


def _s3_request(
    con: http.client.HTTPConnection, method: str, path: str, body: bytes = b""
) -> http.client.HTTPResponse:
    # moto routes by the SigV4 credential scope and does not check the signature.
    scope = "testing/20261204/eu-west-1/s3/aws4_request"
    headers = {
        "Authorization": f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host, Signature=0",
        "Content-Length": str(len(body)),
    }
    con.request(method, path, body=body, headers=headers)
    response = con.getresponse()
    response.read()
    return response


@pytest.mark.parametrize("own_process", [False, True], ids=["in-process", "own-process"])
def test_the_emulator_keeps_connections_alive_as_s3_does(own_process: bool) -> None:
    """One connection serves every request, as with AWS S3 (werkzeug alone closes each),
    and a body the app leaves unread is drained by its length, not read into the next."""
    with start_aws(own_process=own_process) as emulator:
        url = urlsplit(emulator.endpoint_url)
        con = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
        location = b"<CreateBucketConfiguration><LocationConstraint>eu-west-1"
        location += b"</LocationConstraint></CreateBucketConfiguration>"
        created = _s3_request(con, "PUT", "/keep-alive", location)
        first = con.sock
        put = _s3_request(con, "PUT", "/keep-alive/a.csv", b"x,y\n1,2\n")
        unread = _s3_request(con, "GET", "/keep-alive/a.csv", b"a body GET does not read")
        listed = _s3_request(con, "GET", "/keep-alive?list-type=2")
        assert [r.status for r in (created, put, unread, listed)] == [200, 200, 200, 200]
        assert all(r.getheader("Connection") is None for r in (created, put, unread, listed))
        assert first is not None and con.sock is first  # never reopened
        con.close()


def test_stopping_the_emulator_closes_its_kept_connections() -> None:
    emulator = start_aws()
    url = urlsplit(emulator.endpoint_url)
    con = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    assert _s3_request(con, "GET", "/").status == 200  # ListBuckets, connection kept
    emulator.stop()
    con.auto_open = 0  # the kept connection, not a new one (which the port refuses)
    with pytest.raises((http.client.HTTPException, OSError)):
        _s3_request(con, "GET", "/")
    con.close()


def test_the_bench_network_hop_holds_each_direction_for_its_delay() -> None:
    """``forwarder_process``: a hop in its own process that passes bytes both ways, each
    held at least ``delay`` (what `make bench` puts between the sync and the database)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        target = ("127.0.0.1", int(server.getsockname()[1]))
        with forwarder_process(target, delay=0.05) as port:
            client = socket.create_connection(("127.0.0.1", port), timeout=10)
            peer, _ = server.accept()
            with client, peer:
                clock = time.monotonic()
                client.sendall(b"ping")
                assert peer.recv(16) == b"ping"
                peer.sendall(b"pong")
                assert client.recv(16) == b"pong"
                assert time.monotonic() - clock >= 0.1  # held once each way
