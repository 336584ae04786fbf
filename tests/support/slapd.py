"""A real OpenLDAP server for the tests: Debian's ``slapd``, started by the tests from a config of its own.

One server per test process (session fixture ``slapd_server``), in a private temporary directory: an
``mdb`` database under ``dc=example,dc=org``, a certificate of its own issued by a test CA for
``localhost`` and ``127.0.0.1``, ``ldap://`` (StartTLS) and ``ldaps://`` on loopback ports, a root DN
with a password, and a read-only service account ``SYNC_DN`` the directory sync binds as. Users are
``inetOrgPerson`` entries under ``ou=people`` with a ``uid``; the auxiliary class ``opencapfDevices``
of a small schema of its own adds the multi-valued attribute ``opencapfDeviceName``. A search by the
service account returns at most ``SIZE_LIMIT`` entries unless it pages (like a large production
directory). Entries are loaded offline with ``slapadd`` before the start and changed online through
the root DN. slapd runs as the invoking user (as root too: it needs no privileged port).

A missing server fails the test with the command that installs it; it never skips.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from . import certfactory

INSTALL = "apt-get update && apt-get install -y slapd ldap-utils"
SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SUFFIX = "dc=example,dc=org"
PEOPLE = f"ou=people,{SUFFIX}"
ROOT_DN = f"cn=admin,{SUFFIX}"
SYNC_DN = f"uid=capf-sync,ou=services,{SUFFIX}"
SIZE_LIMIT = 500
DEVICE_ATTRIBUTE = "opencapfDeviceName"
SCHEMA_DIR = "/etc/ldap/schema"
# Attribute and class under the enterprise number RFC 5612 reserves for documentation.
DEVICE_SCHEMA = f"""\
attributetype ( 1.3.6.1.4.1.32473.1.1.1 NAME '{DEVICE_ATTRIBUTE}'
  DESC 'Name of a device of the person'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15{{64}} )
objectclass ( 1.3.6.1.4.1.32473.1.2.1 NAME 'opencapfDevices' SUP top AUXILIARY
  DESC 'Devices of a person' MAY ( {DEVICE_ATTRIBUTE} ) )
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _certificate(common_name: str, issuer=None):
    """(certificate, key): a CA when ``issuer`` is None, else a ``localhost`` TLS server certificate. Both carry
    key identifiers (Python's strict X.509 verification wants the authority key identifier)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    issuer_cert, issuer_key = issuer if issuer else (None, key)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_cert.subject if issuer_cert else name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                              critical=False))
    if issuer is None:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True)
    else:
        builder = (builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
    return builder.sign(issuer_key, hashes.SHA256()), key


def ssha(password: str) -> str:
    """An ``{SSHA}`` userPassword value."""
    salt = os.urandom(8)
    return "{SSHA}" + base64.b64encode(hashlib.sha1(password.encode() + salt).digest() + salt).decode()


def user_ldif(uid: str, devices=(), *, base: str = PEOPLE) -> str:
    """The LDIF of a user entry (with its device names, if any)."""
    lines = [f"dn: uid={uid},{base}", "objectClass: inetOrgPerson"]
    if devices:
        lines.append("objectClass: opencapfDevices")
    lines += [f"uid: {uid}", f"cn: {uid}", f"sn: {uid}"]
    lines += [f"{DEVICE_ATTRIBUTE}: {device}" for device in devices]
    return "\n".join(lines) + "\n\n"


def _write(path: str, text, mode: int = 0o600) -> str:
    with open(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode), "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


class SlapdServer:
    """A running slapd; ``users`` maps uid -> device names loaded before the start."""

    def __init__(self, users: dict[str, tuple] | None = None, *, ldif: str = ""):
        for binary in (SLAPD, SLAPADD):
            if not os.path.exists(binary):
                pytest.fail(f"{binary} not found: run `{INSTALL}` (scripts/test-unit does it when run as root)",
                            pytrace=False)
        self.root = tempfile.mkdtemp(prefix="opencapf-slapd-")
        self.root_password = base64.b32encode(os.urandom(10)).decode()
        self.sync_password = base64.b32encode(os.urandom(10)).decode()
        ca = _certificate("opencapf test LDAP CA")
        leaf, key = _certificate("localhost", issuer=ca)
        self.ca_file = _write(os.path.join(self.root, "ca.pem"), certfactory.pem(ca[0]), 0o644)
        other, _key = _certificate("some other CA")
        self.other_ca_file = _write(os.path.join(self.root, "other-ca.pem"), certfactory.pem(other), 0o644)
        cert_file = _write(os.path.join(self.root, "server.pem"), certfactory.pem(leaf), 0o644)
        key_file = _write(os.path.join(self.root, "server.key"), certfactory.key_pem(key))
        schema = _write(os.path.join(self.root, "opencapf.schema"), DEVICE_SCHEMA, 0o644)
        os.mkdir(os.path.join(self.root, "db"), 0o700)
        includes = "".join(f"include {SCHEMA_DIR}/{name}.schema\n" for name in ("core", "cosine", "inetorgperson"))
        self.config = _write(os.path.join(self.root, "slapd.conf"), f"""\
{includes}include {schema}
pidfile {self.root}/slapd.pid
argsfile {self.root}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCertificateFile {cert_file}
TLSCertificateKeyFile {key_file}
TLSCACertificateFile {self.ca_file}
database mdb
maxsize 1073741824
suffix "{SUFFIX}"
rootdn "{ROOT_DN}"
rootpw {ssha(self.root_password)}
directory {self.root}/db
dbnosync
index objectClass,uid eq
limits dn.exact="{SYNC_DN}" size.soft={SIZE_LIMIT} size.hard={SIZE_LIMIT} size.prtotal=unlimited
access to attrs=userPassword by anonymous auth by * none
access to * by users read by * none
""")
        base = (f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n"
                f"dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n"
                f"dn: ou=services,{SUFFIX}\nobjectClass: organizationalUnit\nou: services\n\n"
                f"dn: {SYNC_DN}\nobjectClass: account\nobjectClass: simpleSecurityObject\nuid: capf-sync\n"
                f"userPassword: {ssha(self.sync_password)}\n\n")
        body = base + "".join(user_ldif(uid, devices) for uid, devices in (users or {}).items()) + ldif
        load = _write(os.path.join(self.root, "load.ldif"), body)
        self._run([SLAPADD, "-q", "-f", self.config, "-l", load])
        os.unlink(load)
        self.host = "127.0.0.1"
        self.ldap_port, self.ldaps_port = _free_port(), _free_port()
        self.ldap_url = f"ldap://localhost:{self.ldap_port}"
        self.ldaps_url = f"ldaps://localhost:{self.ldaps_port}"
        self.process = subprocess.Popen(  # pylint: disable=consider-using-with
            [SLAPD, "-d", "0", "-f", self.config, "-h",
             f"ldap://{self.host}:{self.ldap_port}/ ldaps://{self.host}:{self.ldaps_port}/"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.root, "slapd.log"), "wb"))  # noqa: SIM115
        self._wait()

    def _run(self, command: list[str]) -> None:
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
        if result.returncode != 0:
            pytest.fail(f"{os.path.basename(command[0])} failed ({result.returncode}): {result.stderr.strip()}",
                        pytrace=False)

    def _wait(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                with open(os.path.join(self.root, "slapd.log"), encoding="utf-8", errors="replace") as handle:
                    pytest.fail(f"slapd exited ({self.process.returncode}): {handle.read()[-2000:]}", pytrace=False)
            try:
                with socket.create_connection((self.host, self.ldaps_port), timeout=1):
                    with socket.create_connection((self.host, self.ldap_port), timeout=1):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        pytest.fail("slapd did not listen within 30 s", pytrace=False)

    def admin(self):
        """An ldap3 connection bound as the root DN (over StartTLS)."""
        import ldap3

        tls = ldap3.Tls(ca_certs_file=self.ca_file, validate=2)
        server = ldap3.Server("localhost", port=self.ldap_port, tls=tls)
        connection = ldap3.Connection(server, ROOT_DN, self.root_password, auto_bind=ldap3.AUTO_BIND_TLS_BEFORE_BIND,
                                      raise_exceptions=True)
        return connection

    @staticmethod
    def _add(connection, uid: str, devices, base: str) -> None:
        classes = ["inetOrgPerson"] + (["opencapfDevices"] if devices else [])
        attributes = {"uid": uid, "cn": uid, "sn": uid}
        if devices:
            attributes[DEVICE_ATTRIBUTE] = list(devices)
        connection.add(f"uid={uid},{base}", classes, attributes)

    def add_user(self, uid: str, devices=(), *, base: str = PEOPLE) -> None:
        with self.admin() as connection:
            self._add(connection, uid, devices, base)

    def new_base(self, users: dict[str, tuple] | None = None) -> str:
        """A fresh ``ou`` of its own under ``ou=people`` (one per test on the shared server), with ``users``."""
        self._bases = getattr(self, "_bases", 0) + 1
        base = f"ou=t{self._bases}-{os.getpid()},{PEOPLE}"
        with self.admin() as connection:
            connection.add(base, ["organizationalUnit"], {"ou": base.split(",")[0][3:]})
            for uid, devices in (users or {}).items():
                self._add(connection, uid, devices, base)
        return base

    def remove_user(self, uid: str, *, base: str = PEOPLE) -> None:
        with self.admin() as connection:
            connection.delete(f"uid={uid},{base}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def slapd_server():
    """This test process's slapd, empty but for the service account (tests add users under their own ou)."""
    server = SlapdServer()
    yield server
    server.stop()
