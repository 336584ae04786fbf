# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A simulated phone: its configuration, MIC, current LSC and "flash", optionally kept on disk.

Directory layout (all files 0600): ``phone.json`` (settings and flash), ``mic.pem``/``mic.key``,
``lsc.pem``/``lsc.key``. The flash keeps the authentication mode of an operation in progress,
so a phone that loses power mid-session resumes with the same mode; it is cleared when the
operation completes.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from ..ca import certificates as c
from ..ca import keys
from ..errors import ValidationError
from ..files import read_private_file, write_private_file
from ..protocol.constants import CertificateType
from ..protocol.phone import Handset
from ..vocabulary import AUTH_MODES, SECURITY_MODES, check_choice
from .addressing import IP_MODES

SETTINGS_FILE = "phone.json"


@dataclass
class PhoneSettings:
    device_name: str
    model: str = "CP-8865"
    auth_mode: str = "null_string"
    auth_string: str = ""
    security_mode: str = "non_secure"
    ip_mode: str = "ipv4"
    phone_families: list = field(default_factory=lambda: [4])
    flash_auth_mode: str = ""  # the mode of an unfinished operation (survives power failure)
    registered: bool = False

    def check(self) -> "PhoneSettings":
        check_choice("auth_mode", self.auth_mode, AUTH_MODES)
        check_choice("security_mode", self.security_mode, SECURITY_MODES)
        check_choice("ip_mode", self.ip_mode, IP_MODES)
        if not self.device_name:
            raise ValidationError("device_name", "must not be empty")
        return self


class PhoneIdentity(Handset):
    """One simulated phone; ``directory=None`` keeps it in memory only (fleet runs)."""

    def __init__(self, settings: PhoneSettings, directory: str | None = None, *, mic=None, mic_key=None, lsc=None,
                 lsc_key=None, key_factory=None):
        self.settings = settings.check()
        self.directory = directory
        self.mic, self.mic_key, self.lsc, self.lsc_key = mic, mic_key, lsc, lsc_key
        self._pending_key = None
        self.key_factory = key_factory or _generate

    # -- Handset ------------------------------------------------------------------------------

    @property
    def device_name(self) -> str:
        return self.settings.device_name

    @property
    def auth_mode(self) -> str:
        return self.settings.flash_auth_mode or self.settings.auth_mode

    @property
    def auth_string(self) -> str:
        return self.settings.auth_string

    def presented_certificate(self):
        lsc = (c.to_der(self.lsc), self.lsc_key) if self.lsc is not None else None
        mic = (c.to_der(self.mic), self.mic_key) if self.mic is not None else None
        if self.auth_mode == "existing_cert_mic":
            return mic or lsc
        return lsc or mic

    def generate_key(self, kind: str, size: int):
        return self.key_factory(kind, size)

    def store_lsc(self, der: bytes, private_key) -> bool:
        certificate = c.load_der_certificate(der, "LSC")
        if c.public_key_der(certificate.public_key()) != c.public_key_der(private_key.public_key()):
            return False
        self.lsc, self.lsc_key = certificate, private_key
        if self._pending_key is not None and \
                c.public_key_der(self._pending_key.public_key()) == c.public_key_der(private_key.public_key()):
            self._pending_key = None
            self._remove("pending.key")
        self.save()
        return True

    def pending_key(self):
        return self._pending_key

    def keep_pending_key(self, private_key) -> None:
        """X-CSR/1: keep the key whose CSR is at a third-party CA (survives restarts, like flash)."""
        self._pending_key = private_key
        if self.directory:
            write_private_file(os.path.join(self.directory, "pending.key"), keys.private_key_pem(private_key))

    def _remove(self, name: str) -> None:
        if self.directory:
            path = os.path.join(self.directory, name)
            if os.path.exists(path):
                os.unlink(path)

    def certificates_for_fetch(self) -> list:
        entries = []
        if self.lsc is not None:
            entries.append((CertificateType.LSC, c.to_der(self.lsc)))
        if self.mic is not None:
            entries.append((CertificateType.MIC, c.to_der(self.mic)))
        return entries

    def delete_lsc(self) -> bool:
        had = self.lsc is not None
        self.lsc = self.lsc_key = None
        for name in ("lsc.pem", "lsc.key"):
            self._remove(name)
        self.save()
        return had

    # -- flash --------------------------------------------------------------------------------

    def begin_operation(self) -> None:
        """Remember the mode before talking to CAPF, so a power failure does not lose it."""
        if not self.settings.flash_auth_mode:
            self.settings.flash_auth_mode = self.settings.auth_mode
            self.save()

    def complete_operation(self) -> None:
        self.settings.flash_auth_mode = ""
        if self.lsc is not None and self.settings.security_mode != "non_secure":
            self.settings.registered = True
        self.save()

    # -- persistence --------------------------------------------------------------------------

    @classmethod
    def create(cls, directory: str | None, settings: PhoneSettings, *, mic_ca=None, mic_key_type: str = "ec256",
               key_factory=None) -> "PhoneIdentity":
        identity = cls(settings, directory, key_factory=key_factory)
        if mic_ca is not None:
            identity.mic_key = keys.generate(mic_key_type)
            identity.mic = mic_ca.issue_mic(settings.device_name, identity.mic_key.public_key(), settings.model)
        identity.save()
        return identity

    @classmethod
    def load(cls, directory: str, key_factory=None) -> "PhoneIdentity":
        data = json.loads(read_private_file(os.path.join(directory, SETTINGS_FILE), "phone settings"))
        identity = cls(PhoneSettings(**data), directory, key_factory=key_factory)
        for kind in ("mic", "lsc"):
            pem_path = os.path.join(directory, f"{kind}.pem")
            if os.path.exists(pem_path):
                setattr(identity, kind, c.load_pem_certificate(read_private_file(pem_path, f"{kind} file")))
                setattr(identity, f"{kind}_key", keys.load_private_key(os.path.join(directory, f"{kind}.key")))
        if os.path.exists(os.path.join(directory, "pending.key")):
            identity._pending_key = keys.load_private_key(os.path.join(directory, "pending.key"))
        return identity

    def save(self) -> None:
        if not self.directory:
            return
        write_private_file(os.path.join(self.directory, SETTINGS_FILE),
                           json.dumps(asdict(self.settings), indent=2, sort_keys=True).encode())
        for kind in ("mic", "lsc"):
            certificate, key = getattr(self, kind), getattr(self, f"{kind}_key")
            if certificate is not None:
                write_private_file(os.path.join(self.directory, f"{kind}.pem"), c.to_pem(certificate).encode())
                write_private_file(os.path.join(self.directory, f"{kind}.key"), keys.private_key_pem(key))

    def contact_decision(self, string_entered: bool = False) -> tuple[bool, str]:
        """Whether the phone contacts CAPF now (device security mode rules), and why not."""
        secure = self.settings.security_mode != "non_secure"
        if secure and self.auth_mode == "auth_string":
            return False, "an authenticated or encrypted phone cannot use authentication-string mode"
        if self.auth_mode == "auth_string" and not string_entered:
            return False, "authentication-string mode waits for the string to be entered on the phone"
        if not secure:
            self.settings.registered = True  # a non-secure phone registers first, then contacts CAPF
        return True, ""


def _generate(kind: str, size: int):
    return keys.generate(f"{kind}{size}") if f"{kind}{size}" in ("rsa2048", "rsa3072", "rsa4096", "ec256", "ec384") \
        else _generate_other(kind, size)


def _generate_other(kind: str, size: int):
    from ..dependencies import ec, rsa
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=size)
    return ec.generate_private_key(keys.curve_for(size))
