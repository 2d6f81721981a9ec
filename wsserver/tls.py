"""TLS for ``wss://`` and ``https://``: server-side contexts.

:func:`server_context` loads a certificate and key from files (made by
``mkcert``, a company CA, or Let's Encrypt for a public name).
:func:`self_signed_context` makes a self-signed certificate for the names
and LAN addresses a desktop program is reached by; it needs the
``cryptography`` package (``pip install 'wsserver[tls]'``), since the
standard library cannot make certificates.

Either context goes to ``Server(ssl_context=...)``. The handshake is then
driven a step at a time inside ``poll()`` (see :class:`~wsserver.reactor.Stream`).
Its costliest step is the server's signature, one unit of work that
cannot be split: about 0.2 ms with an ECDSA P-256 key, 0.4 ms with RSA-2048
and 4 ms with RSA-4096, twice the default ``poll_budget``. Use ECDSA or
RSA-2048 keys on a GUI thread.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import tempfile
from collections.abc import Iterable

__all__ = ["server_context", "self_signed_context"]


def server_context(certfile: str | os.PathLike[str], keyfile: str | os.PathLike[str] | None = None) -> ssl.SSLContext:
    """A server-side context for the certificate (chain) in ``certfile``
    and its key (in ``keyfile``, or in ``certfile`` too): TLS 1.2 or newer,
    no renegotiation (each would be a handshake in the middle of a
    connection), and no TLS 1.3 session tickets.

    Tickets are sent just after the handshake, when a client starts
    writing its request. A client that reads and writes one TLS socket from
    two threads (websockets' sync client does, and CPython's ``ssl`` did not
    serialise the two before 3.13) then sometimes loses that first write:
    here about one ``wss://`` connect in 100 to 400 waited for an answer
    to a request the server never got. Without tickets there is nothing to
    read at that moment; what is lost is session resumption, a full
    handshake instead (well under a millisecond of the server's work with
    an ECDSA key)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    context.num_tickets = 0
    context.load_cert_chain(certfile, keyfile)
    return context


def self_signed_context(
    hostnames: Iterable[str],
    days: int = 825,
    certfile: str | os.PathLike[str] | None = None,
) -> ssl.SSLContext:
    """A server-side context with a new self-signed certificate (ECDSA
    P-256) for ``hostnames``: host names, or IP addresses such as the LAN
    address a phone connects to (``Server.get_local_ip()``, or
    ``http_server.get_url(use_lan_ip=True)``).

    ``certfile``, if given, receives the certificate (PEM, no key), to be
    installed as trusted on the devices that connect. Browsers warn about a
    certificate that no device trusts, and pages on it are not a secure
    context until the user trusts it; ``days`` is kept at 825, the longest
    that Apple devices accept. The key lives only in the returned context:
    a new call makes a new certificate, to be trusted again.

    Raises ``ImportError`` without the ``cryptography`` package.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    names = list(hostnames)
    if not names:
        raise ValueError("at least one host name or address is needed")
    alternative_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alternative_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternative_names.append(x509.DNSName(name))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    if certfile is not None:
        with open(certfile, "wb") as f:
            f.write(cert_pem)
    # load_cert_chain reads files only: the key is on disk for that call alone.
    with tempfile.TemporaryDirectory() as folder:
        cert_path, key_path = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
        with open(cert_path, "wb") as f:
            f.write(cert_pem)
        with open(os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
            f.write(key_pem)
        return server_context(cert_path, key_path)
