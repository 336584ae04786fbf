# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""An OpenLDAP directory for the capf_ldap_sync target: Debian's slapd from a config of its own.

    python directory_server.py start DIR UID...   # prints {"url", "ca_file", "other_ca_file", "bind_dn", "base"}
    python directory_server.py add DIR UID         # a person, added online (as the root DN, over LDAPS)
    python directory_server.py delete DIR UID      # a person, deleted online
    python directory_server.py stop DIR            # stops slapd (nothing to do when it is not running)

``start`` makes a CA and a ``localhost``/``127.0.0.1`` server certificate it issues, another CA that
issued nothing, an ``mdb`` database under ``dc=example,dc=org`` loaded with ``slapadd`` (people under
``ou=people`` with a ``uid``, the service account ``uid=capf-sync,ou=services`` whose password is
``$DIRECTORY_BIND_PASSWORD``), and runs slapd on ``ldaps://127.0.0.1`` at a free port, as the invoking
user (root too: the port is not privileged). Everything lives in DIR; the root DN's password in a
0600 file there.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import ipaddress
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import typing

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SCHEMA_DIR = "/etc/ldap/schema"
SUFFIX = "dc=example,dc=org"
PEOPLE = f"ou=people,{SUFFIX}"
ROOT_DN = f"cn=admin,{SUFFIX}"
SYNC_DN = f"uid=capf-sync,ou=services,{SUFFIX}"
ATTEMPTS = 5


def _write(path: str, data: str | bytes, mode: int = 0o600) -> str:
    with open(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode), "wb") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)
    return path


def _pem(certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _certificate(common_name: str, issuer=None):
    """(certificate, key): a CA when ``issuer`` is None, else a TLS server certificate for localhost."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    issuer_certificate, issuer_key = issuer if issuer else (None, key)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name)
               .issuer_name(issuer_certificate.subject if issuer_certificate else name)
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


def _ssha(password: str) -> str:
    salt = os.urandom(8)
    return "{SSHA}" + base64.b64encode(hashlib.sha1(password.encode() + salt).digest() + salt).decode()


def _person(uid: str) -> str:
    return f"dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n\n"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _pid(directory: str) -> int | None:
    try:
        with open(os.path.join(directory, "slapd.pid"), encoding="ascii") as handle:
            text = handle.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _alive(pid: int) -> bool:
    """Whether the process runs (an exited one nobody has reaped yet does not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _fail(message: str) -> typing.NoReturn:
    sys.stderr.write(message + "\n")
    sys.exit(1)


def _configure(directory: str, uids: list[str]) -> None:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    ca = _certificate("capf_ldap_sync test CA")
    leaf, key = _certificate("localhost", issuer=ca)
    other, _other_key = _certificate("capf_ldap_sync other CA")
    _write(os.path.join(directory, "ca.pem"), _pem(ca[0]), 0o644)
    _write(os.path.join(directory, "other-ca.pem"), _pem(other), 0o644)
    _write(os.path.join(directory, "server.pem"), _pem(leaf), 0o644)
    _write(os.path.join(directory, "server.key"), key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    root_password = secrets.token_urlsafe(18)
    _write(os.path.join(directory, "root.password"), root_password)
    os.makedirs(os.path.join(directory, "db"), mode=0o700, exist_ok=True)
    includes = "".join(f"include {SCHEMA_DIR}/{name}.schema\n" for name in ("core", "cosine", "inetorgperson"))
    _write(os.path.join(directory, "slapd.conf"), f"""\
{includes}pidfile {directory}/slapd.pid
argsfile {directory}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCertificateFile {directory}/server.pem
TLSCertificateKeyFile {directory}/server.key
TLSCACertificateFile {directory}/ca.pem
database mdb
maxsize 104857600
suffix "{SUFFIX}"
rootdn "{ROOT_DN}"
rootpw {_ssha(root_password)}
directory {directory}/db
dbnosync
index objectClass,uid eq
access to attrs=userPassword by anonymous auth by * none
access to * by users read by * none
""")
    password = os.environ.get("DIRECTORY_BIND_PASSWORD")
    if not password:
        _fail("DIRECTORY_BIND_PASSWORD is not set")
    entries = (f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n"
               f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n\n"
               f"dn: ou=services,{SUFFIX}\nobjectClass: organizationalUnit\nou: services\n\n"
               f"dn: {SYNC_DN}\nobjectClass: account\nobjectClass: simpleSecurityObject\nuid: capf-sync\n"
               f"userPassword: {_ssha(password)}\n\n") + "".join(_person(uid) for uid in uids)
    load = _write(os.path.join(directory, "load.ldif"), entries)
    result = subprocess.run([SLAPADD, "-q", "-f", os.path.join(directory, "slapd.conf"), "-l", load],
                            capture_output=True, text=True, check=False, timeout=120)
    os.unlink(load)
    if result.returncode != 0:
        _fail(f"slapadd failed ({result.returncode}): {result.stderr.strip()}")


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def start(directory: str, uids: list[str]) -> None:
    for binary in (SLAPD, SLAPADD):
        if not os.path.exists(binary):
            _fail(f"{binary} not found: apt-get install -y slapd")
    _configure(directory, uids)
    log = os.path.join(directory, "slapd.log")
    for _attempt in range(ATTEMPTS):
        port = _free_port()
        with open(log, "ab") as output:
            # -d 0: in the foreground (no syslog), detached from this script's session and output.
            subprocess.Popen(  # pylint: disable=consider-using-with
                [SLAPD, "-d", "0", "-f", os.path.join(directory, "slapd.conf"), "-h", f"ldaps://127.0.0.1:{port}/"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=output, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pid = _pid(directory)
            if _listening(port) and pid:
                print(json.dumps({"url": f"ldaps://localhost:{port}", "ca_file": os.path.join(directory, "ca.pem"),
                                  "other_ca_file": os.path.join(directory, "other-ca.pem"), "bind_dn": SYNC_DN,
                                  "base": PEOPLE, "pid": pid}))
                return
            time.sleep(0.05)
        stop(directory)  # the port was taken meanwhile, or slapd refused to start: try another port
    with open(log, encoding="utf-8", errors="replace") as handle:
        _fail(f"slapd did not listen after {ATTEMPTS} attempts: {handle.read()[-2000:]}")


def _admin(directory: str):
    import ldap3  # the module's own requirement on the managed host

    with open(os.path.join(directory, "root.password"), encoding="ascii") as handle:
        root_password = handle.read()
    with open(os.path.join(directory, "slapd.args"), encoding="ascii") as handle:
        url = handle.read().split()[-1].rstrip("/")
    port = int(url.rsplit(":", 1)[1])
    tls = ldap3.Tls(ca_certs_file=os.path.join(directory, "ca.pem"), validate=2)
    server = ldap3.Server("localhost", port=port, use_ssl=True, tls=tls)
    return ldap3.Connection(server, ROOT_DN, root_password, auto_bind=True, raise_exceptions=True)


def add(directory: str, uid: str) -> None:
    with _admin(directory) as connection:
        connection.add(f"uid={uid},{PEOPLE}", ["inetOrgPerson"], {"uid": uid, "cn": uid, "sn": uid})


def delete(directory: str, uid: str) -> None:
    with _admin(directory) as connection:
        connection.delete(f"uid={uid},{PEOPLE}")


def stop(directory: str) -> None:
    pid = _pid(directory)
    if pid is None or not _alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):  # slapd removes it when it ends cleanly
        os.unlink(os.path.join(directory, "slapd.pid"))


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[0] not in ("start", "add", "delete", "stop"):
        _fail(__doc__)
    verb, directory, rest = argv[0], os.path.abspath(argv[1]), argv[2:]
    if verb == "start":
        start(directory, rest)
    elif verb == "stop":
        stop(directory)
    else:
        {"add": add, "delete": delete}[verb](directory, rest[0])


if __name__ == "__main__":
    main(sys.argv[1:])
