"""A listener's certificate renewed on disk is served to new connections without a restart; a pair that does not
load (half-written, or not a pair) leaves the previous one served, and is said once."""
import asyncio
import logging
import ssl

from cryptography import x509

from registry_mirror.tls import served_cert
from registry_mirror.tls.served_cert import ServedCert
from tests.unit.support.waits import BOUND, until
from tests.unit.tls.test_certs import DAY, NOW, make_pair


async def served_serial(port: int) -> int:
    """The serial of the certificate a new TLS connection is shown."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    await writer.wait_closed()
    return x509.load_der_x509_certificate(der).serial_number


async def serial_becomes(port: int, serial: int) -> None:
    deadline = asyncio.get_running_loop().time() + BOUND
    while (seen := await served_serial(port)) != serial:
        assert asyncio.get_running_loop().time() < deadline, f"still serving serial {seen}, not {serial}"
        await asyncio.sleep(0.01)


async def scenario(tmp_path, steps, poll):
    """Serve pair serial 1 on a TLS listener, run `steps(served, port)`, stop; the ServedCert."""
    make_pair(tmp_path, NOW + 400 * DAY, serial=1)
    served = ServedCert(str(tmp_path / "mirror.crt"), str(tmp_path / "mirror.key"), "test listener", poll,
                        clock=lambda: NOW)

    async def close_at_once(_reader, writer):
        writer.close()
    server = await asyncio.start_server(close_at_once, "127.0.0.1", 0, ssl=served.context)
    port = server.sockets[0].getsockname()[1]
    served.start()
    try:
        assert await served_serial(port) == 1
        await steps(served, port)
    finally:
        await served.stop()
        server.close()
        await server.wait_closed()
    return served


async def test_a_renewed_pair_is_served_to_new_connections_and_a_half_written_one_is_not(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=served_cert.__name__)
    new_cert, new_key = make_pair(tmp_path, NOW + 800 * DAY, serial=2, cert_name="new.crt", key_name="new.key")

    async def steps(served, port):
        (tmp_path / "mirror.crt").write_bytes(new_cert.read_bytes()[:300])  # the copy is under way
        (tmp_path / "mirror.key").write_bytes(new_key.read_bytes())
        await until(lambda: "not served yet" in caplog.text, "the half-written pair logged")
        assert await served_serial(port) == 1
        (tmp_path / "mirror.crt").write_bytes(new_cert.read_bytes())
        await serial_becomes(port, 2)
    served = await scenario(tmp_path, steps, poll=0.01)
    assert caplog.text.count("not served yet") == 1  # once, however many polls saw it
    assert "test listener: reloaded its TLS certificate" in caplog.text
    assert "valid until 2029-03-25 08:00 UTC" in caplog.text
    assert served.task.cancelled()


async def test_a_pair_that_fails_to_load_leaves_the_previous_certificate_served(tmp_path, caplog):
    new_cert, _ = make_pair(tmp_path, NOW + 800 * DAY, serial=2, cert_name="new.crt", key_name="new.key")

    async def steps(served, port):
        (tmp_path / "mirror.crt").write_bytes(new_cert.read_bytes())  # with the old key: no pair
        assert not served.reload()
        assert await served_serial(port) == 1  # and the handshake still works
    await scenario(tmp_path, steps, poll=3600)
    assert "cannot load the new TLS pair" in caplog.text and "still serving the previous certificate" in caplog.text


async def test_a_reloaded_certificate_near_its_end_is_warned_of(tmp_path, caplog):
    async def steps(served, port):
        make_pair(tmp_path, NOW + 3 * DAY, serial=2)
        assert served.reload()
        assert await served_serial(port) == 2
    await scenario(tmp_path, steps, poll=3600)
    assert "expires on 2027-01-18 08:00 UTC, in 3 days" in caplog.text
