"""A real OpenLDAP server for the tests: Debian's ``slapd``, started from a config of its own.

In a directory of its own (a private temporary one unless one is given): an ``mdb`` database under
``dc=example,dc=org``, a certificate of its own issued by a test CA for ``localhost`` and
``127.0.0.1`` (and another CA that issued nothing), ``ldap://`` (StartTLS) and ``ldaps://`` on free
loopback ports, a root DN with a password, and a read-only service account ``SYNC_DN`` the directory
sync binds as. Users are ``inetOrgPerson`` entries under ``ou=people`` with a ``uid``; the auxiliary
class ``opencapfDevices`` of a small schema of its own adds the multi-valued attribute
``opencapfDeviceName``. A search by the service account returns at most ``SIZE_LIMIT`` entries unless
it pages (like a large production directory). Entries are loaded offline with ``slapadd`` before the
start and changed online through the root DN. slapd runs as the invoking user (as root too: it needs
no privileged port).

The tests use ``SlapdServer`` (one per test process: the session fixture ``slapd_server`` in
``tests/conftest.py``). The capf_ldap_sync integration target runs this file as a script, with the
module's Python, to keep one server in DIR across its tasks:

    python slapd.py start DIR UID...   # prints {"url", "ca_file", "other_ca_file", "bind_dn", "base", "pid"}
    python slapd.py add DIR UID         # a person, added online
    python slapd.py delete DIR UID      # a person, deleted online
    python slapd.py stop DIR            # stops slapd (nothing to do when it is not running)

``start`` gives the service account the password in ``$DIRECTORY_BIND_PASSWORD`` and serves ``url``
over LDAPS. A missing slapd is a ``SlapdError`` naming the command that installs it; the tests fail
with it and never skip.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

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
ATTEMPTS = 5  # starts, each on other ports, before giving up (a port may be taken between probe and bind)
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


def _write(path: str, text: str, mode: int = 0o600) -> str:
    with open(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode), "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.read()


def _pem(certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _alive(pid: int) -> bool:
    """Whether the process runs (an exited one nobody has reaped yet does not)."""
    try:
        return _read(f"/proc/{pid}/stat").rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


class SlapdError(Exception):
    """slapd is missing or did not start; the message says why."""


class SlapdServer:
    """A running slapd; ``users`` maps uid -> device names loaded before the start.

    ``directory`` keeps everything (a private temporary directory, removed by ``stop``, when not given);
    ``detach`` starts slapd in a session of its own, to outlive the process that started it.
    """

    def __init__(self, users: dict[str, tuple] | None = None, *, ldif: str = "", directory: str | None = None,
                 sync_password: str | None = None, detach: bool = False):
        for binary in (SLAPD, SLAPADD):
            if not os.path.exists(binary):
                raise SlapdError(f"{binary} not found: run `{INSTALL}` (scripts/test-unit and scripts/test-integration "
                                 "do it when run as root)")
        self._temporary = directory is None
        self.root = tempfile.mkdtemp(prefix="opencapf-slapd-") if directory is None else directory
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        self.root_password = base64.b32encode(os.urandom(10)).decode()
        _write(os.path.join(self.root, "root.password"), self.root_password)
        self.sync_password = sync_password or base64.b32encode(os.urandom(10)).decode()
        ca = _certificate("opencapf test LDAP CA")
        leaf, key = _certificate("localhost", issuer=ca)
        self.ca_file = _write(os.path.join(self.root, "ca.pem"), _pem(ca[0]), 0o644)
        other, _key = _certificate("some other CA")
        self.other_ca_file = _write(os.path.join(self.root, "other-ca.pem"), _pem(other), 0o644)
        cert_file = _write(os.path.join(self.root, "server.pem"), _pem(leaf), 0o644)
        key_file = _write(os.path.join(self.root, "server.key"), key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode())
        schema = _write(os.path.join(self.root, "opencapf.schema"), DEVICE_SCHEMA, 0o644)
        os.makedirs(os.path.join(self.root, "db"), mode=0o700, exist_ok=True)
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
        result = subprocess.run([SLAPADD, "-q", "-f", self.config, "-l", load], capture_output=True, text=True,
                                check=False, timeout=300)
        os.unlink(load)
        if result.returncode != 0:
            raise SlapdError(f"slapadd failed ({result.returncode}): {result.stderr.strip()}")
        self.host = "127.0.0.1"
        self.process: subprocess.Popen | None = None
        self._start(detach)

    def _ports(self, ldap_port: int, ldaps_port: int) -> None:
        self.ldap_port, self.ldaps_port = ldap_port, ldaps_port
        self.ldap_url = f"ldap://localhost:{ldap_port}"
        self.ldaps_url = f"ldaps://localhost:{ldaps_port}"

    def _start(self, detach: bool) -> None:
        log = os.path.join(self.root, "slapd.log")
        for _attempt in range(ATTEMPTS):
            self._ports(_free_port(), _free_port())
            with open(log, "ab") as output:
                # -d 0: in the foreground (no syslog), its output to the log only.
                self.process = subprocess.Popen(  # pylint: disable=consider-using-with
                    [SLAPD, "-d", "0", "-f", self.config, "-h",
                     f"ldap://{self.host}:{self.ldap_port}/ ldaps://{self.host}:{self.ldaps_port}/"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=output, start_new_session=detach)
            deadline = time.monotonic() + 30
            while self.process.poll() is None and time.monotonic() < deadline:
                if _listening(self.host, self.ldaps_port) and _listening(self.host, self.ldap_port):
                    _write(os.path.join(self.root, "server.json"), json.dumps(
                        {"pid": self.process.pid, "ldap_port": self.ldap_port, "ldaps_port": self.ldaps_port}))
                    return
                time.sleep(0.05)
            self._end(self.process.pid)  # a port was taken meanwhile, or slapd refused to start: other ports
        tail = _read(log)[-2000:]
        self.stop()
        raise SlapdError(f"slapd did not listen after {ATTEMPTS} attempts: {tail}")

    @classmethod
    def running(cls, directory: str) -> SlapdServer:
        """The server a ``start`` left running in ``directory`` (to change entries or to stop it)."""
        server = cls.__new__(cls)
        server._temporary, server.root, server.host, server.process = False, directory, "127.0.0.1", None
        server.root_password = _read(os.path.join(directory, "root.password"))
        server.ca_file = os.path.join(directory, "ca.pem")
        server.other_ca_file = os.path.join(directory, "other-ca.pem")
        state = json.loads(_read(os.path.join(directory, "server.json")))
        server._ports(state["ldap_port"], state["ldaps_port"])
        return server

    def admin(self):
        """An ldap3 connection bound as the root DN (over StartTLS)."""
        import ldap3  # the module's own requirement on the managed host

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

    def _end(self, pid: int) -> None:
        """Stop slapd (SIGTERM, SIGKILL after 30 s) and wait until it has gone."""
        for sent, seconds in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            if not _alive(pid):
                break
            os.kill(pid, sent)
            deadline = time.monotonic() + seconds
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        if self.process is not None and self.process.pid == pid:
            self.process.wait()  # this process started it: reap it

    def stop(self) -> None:
        """Stop slapd (nothing to do when it is not running); a temporary directory goes with it."""
        try:
            state = json.loads(_read(os.path.join(self.root, "server.json")))
        except (OSError, ValueError):
            state = {}
        pid = self.process.pid if self.process is not None else state.get("pid")
        if pid:
            self._end(pid)
        if self._temporary:
            shutil.rmtree(self.root, ignore_errors=True)
        elif state:
            os.unlink(os.path.join(self.root, "server.json"))


def main(argv: list[str]) -> int:
    """The integration target's verbs (see the module docstring)."""
    arguments = {"start": None, "add": 3, "delete": 3, "stop": 2}
    if len(argv) < 2 or argv[0] not in arguments or arguments[argv[0]] not in (None, len(argv)):
        sys.stderr.write(__doc__)
        return 2
    verb, directory, rest = argv[0], os.path.abspath(argv[1]), argv[2:]
    try:
        if verb == "start":
            password = os.environ.get("DIRECTORY_BIND_PASSWORD")
            if not password:
                raise SlapdError("DIRECTORY_BIND_PASSWORD is not set")
            server = SlapdServer({uid: () for uid in rest}, directory=directory, sync_password=password, detach=True)
            print(json.dumps({"url": server.ldaps_url, "ca_file": server.ca_file, "other_ca_file": server.other_ca_file,
                              "bind_dn": SYNC_DN, "base": PEOPLE, "pid": server.process.pid}))
        elif verb == "stop":
            if os.path.exists(os.path.join(directory, "server.json")):
                SlapdServer.running(directory).stop()
        elif verb == "add":
            SlapdServer.running(directory).add_user(rest[0])
        else:
            SlapdServer.running(directory).remove_user(rest[0])
    except SlapdError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
