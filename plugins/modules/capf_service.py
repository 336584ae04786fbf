#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: capf_service
short_description: CAPF service parameters, online CA, CAPF certificate and service state
version_added: 0.1.0
description:
  - Converges the CAPF service parameters (certificate issuer, LSC validity, default key settings,
    keep-alive, IPv6, key-generation limits, listener), the online CA settings, and the CAPF certificate.
  - Options left unset keep their current value; a parameter never set reads as its default, which each
    option's description states (C(opencapf service show) prints them all with the current values).
  - With O(state), also starts, stops, restarts or reloads the CAPF service. V(started) means a TLS listener really
    accepts connections on the configured port; V(stopped) means the service process is not running. With
    O(issuer=online_ca) the certificate enrolment service runs inside the CAPF service and follows its state.
  - The CAPF certificate is created when the store has none. It is regenerated when O(capf_certificate.key_type)
    differs from the active one or when O(capf_certificate.regenerate=true), and replaced by an upload of
    O(capf_certificate.certificate) and O(capf_certificate.private_key). Phones keep trusting LSCs of earlier
    CAPF certificates. No restart is needed.
  - The CAPF private key is kept in the store, sealed with a key derived from the store's C(secret.key) file, so
    that every host sharing the store uses a new CAPF certificate at once; a copy of the database alone reveals
    no key. Key files made by earlier versions are sealed into the store by any run outside check mode and left
    in place.
  - The online CA password and the SMTP password of the certificate monitor are stored encrypted with a key held
    outside the database and are never returned.
  - The certificate monitor inside the CAPF service warns by e-mail before LSCs, CAPF certificates and trust-store
    certificates expire (O(monitor_warn_days), O(monitor_recipients), O(monitor_smtp_host) ...). See the
    C(docs/lifecycle.md) page of the collection.
author:
  - opencapf developers (@opencapf)
extends_documentation_fragment:
  - opencapf.capf.capf
  - opencapf.capf.capf.attributes
options:
  issuer:
    description: Certificate Issuer to Endpoint. V(online_ca) needs O(online_ca). Default V(capf) for a new store.
    type: str
    choices: [capf, online_ca, offline_ca]
  validity_days:
    description:
      - LSC validity in days, 1–1825 (with an online CA, what the CA grants). Default V(1825).
      - An LSC the CAPF certificate signs never ends after that certificate's notAfter; its validity is
        shortened to it when needed (the C(certificate.issued) audit event says C(validity_capped)).
    type: int
  keepalive_minutes:
    description: Keep-alive timer for CAPF to endpoint connections, 5–60 minutes. Default V(15).
    type: int
  enable_ipv6:
    description:
      - Accept phones over IPv6; when false, connections from IPv6 addresses are refused. Default V(false).
      - Listening on IPv6 addresses takes effect when the service starts or restarts.
    type: bool
  key_order:
    description: Key order of phones created without one. Default V(rsa).
    type: str
    choices: [rsa, ec, ec_preferred]
  rsa_key_size:
    description: RSA key size of phones created without one. Default V(2048).
    type: int
    choices: [1024, 2048, 3072, 4096]
  ec_key_size:
    description: EC key size of phones created without one. Default V(256).
    type: int
    choices: [256, 384, 521]
  keygen_timeout_minutes:
    description: Maximum time a phone may take to generate its key, 1–60 minutes. Default V(30).
    type: int
  keygen_attempts:
    description: Maximum key-generation attempts before the operation fails, 1–10. Default V(3).
    type: int
  lockout_failures:
    description: Wrong authentication strings accepted before a phone is locked out, 1–100. Default V(5).
    type: int
  max_sessions:
    description:
      - Concurrent phone sessions each worker process (O(processes)) serves at once, 1–100000; further connections
        wait. Default V(1000).
    type: int
  max_sessions_per_address:
    description:
      - Connections one IP address may hold open at once (handshaking, waiting for a session slot or in a session),
        1–100000. Default V(100). Further connections from that address are closed and recorded as refused.
      - Phones behind one NAT address share this limit; raise it for such sites.
    type: int
  processes:
    description:
      - Worker processes of the CAPF service sharing its port, 0–64. Default V(0), which starts one per CPU core the
        service may use (its CPU affinity), at most 8, so a fleet rollout uses every core; V(1) keeps one process.
        An explicit value may be at most four per core of the host. The store is shared by all of them, and each
        worker has its own listening socket on the port (C(SO_REUSEPORT)), so the kernel spreads the phones over them.
      - Takes effect when the service starts or restarts (O(state=restarted)).
    type: int
  event_loop:
    description:
      - Event loop of the CAPF service. Default V(auto), which runs on uvloop (an event loop in C; the TLS driver above it is the same
        on both loops, see C(docs/benchmarks.md)) when it is installed, as the C(capf_server) role installs it, and on the
        standard asyncio loop otherwise. V(uvloop) refuses to start the service where uvloop is not installed.
      - Takes effect when the service starts or restarts (O(state=restarted)).
    type: str
    choices: [auto, asyncio, uvloop]
  scheduler_interval_seconds:
    description:
      - How often the running CAPF service runs due scheduled jobs (M(opencapf.capf.capf_bulk_update) with
        O(opencapf.capf.capf_bulk_update#module:run_at)) and lets pending operations whose deadline has passed
        lapse, 1–3600 seconds. Default V(10). Of several processes serving one store, one does it.
      - Applies from the next round, without a restart.
    type: int
  metrics_address:
    description:
      - V(IP-ADDRESS:PORT) (an IPv6 address in brackets, e.g. V([::1]:9810)) where the CAPF service serves Prometheus
        metrics over plain HTTP at C(/metrics). Default V(""), which serves none. With several worker
        processes the figures are of the whole service. See C(docs/lifecycle.md).
      - Takes effect when the service starts or restarts (O(state=restarted)).
    type: str
  renew_before_days:
    description:
      - Automatic renewal, 0–365 days (default V(0), off). The running service schedules the certificate operation
        V(install_upgrade) for phones whose installed LSC expires within this many days, that have no operation
        pending or in progress and are not in V(auth_string) authentication mode; each LSC is renewed once, with
        the same audit events as a bulk update (C(via=renewal)).
      - With O(issuer=capf), a phone whose new LSC would end no later than its current one (both end with the
        CAPF certificate) is held back until a CAPF certificate that outlives it is active; the certificate
        monitor warns about the CAPF certificate from this many days before its end.
      - Applies from the scheduler's next round, without a restart.
    type: int
  renew_max_per_day:
    description:
      - Automatic renewal schedules at most this many phones in any 24 hours, 1–100000 (default 100), soonest
        expiry first; the rest wait for the next day.
    type: int
  session_retention_days:
    description:
      - Days a session record is kept, 0–3650. Default V(400), so a phone that renews yearly keeps its last
        sessions visible; V(0) keeps them for ever.
      - Every connection to the CAPF service writes one (a C(sessions) row and its C(session.*) audit event),
        refused connections, failed TLS handshakes and phones that retry every few seconds too. The running
        service removes older ones every hour (every O(scheduler_interval_seconds) while a backlog remains), in
        batches that hold the store's write lock briefly, and records each round as a C(store.sessions_pruned)
        audit event. Every other audit event (issuance, revocation, phone changes) is kept for ever.
      - Applies from the scheduler's next round, without a restart.
    type: int
  revoke_after_expiry:
    description:
      - Revoke an LSC once it has expired, with reason V(cessation_of_operation), as the certificate monitor of the
        CAPF configuration guide does (default V(true)). The running service does it every
        O(scheduler_interval_seconds); see docs/lifecycle.md.
    type: bool
  crl_validity_hours:
    description:
      - Hours from a CRL's thisUpdate to its nextUpdate, 1–8760 (default 168). The service signs a new CRL when an
        LSC is revoked and once half of this has passed, so that relying parties never hold an outdated CRL.
      - A CRL lists each revoked LSC until a CRL issued after the LSC's notAfter and its revocation has listed it
        (RFC 5280 section 3.3), so its size follows the revocations of the last O(validity_days).
    type: int
  crl_path:
    description:
      - Absolute path of a file (on every CAPF node) that the service keeps equal to the current CRL of the active
        CAPF certificate, DER encoded, mode 0644, replaced atomically. Default V(""), no file.
      - Beside it, each CAPF certificate that keeps a CRL (the active one and every retired one until it expires) has
        its own file, named with C(-) and the first 16 hex digits of its SHA-256 fingerprint before C(.crl)
        (C(capf.crl) gives C(capf-9c1e04b2d7a3f5e8.crl)).
    type: str
  crl_url:
    description:
      - An C(http://) URL from which LSCs CAPF signs from now on name their CRL distribution point. Default V(""),
        none. Point it at O(crl_http_port) or at a web server publishing O(crl_path).
      - Each LSC names the CRL of the CAPF certificate that signed it, which stays its location after a CAPF
        certificate rotation - C(-) and the first 16 hex digits of that certificate's SHA-256 fingerprint are inserted
        before a final C(.crl) (added when the URL has none), as for the files beside O(crl_path).
    type: str
  crl_http_address:
    description:
      - Address the service answers C(GET /capf.crl) (and C(GET /capf-ID.crl)) on when O(crl_http_port) is set
        (default V(0.0.0.0)).
      - Takes effect when the service starts or restarts.
    type: str
  crl_http_port:
    description:
      - TCP port of the service's plain HTTP CRL responder (C(application/pkix-crl)), 0–65535; default V(0), none.
        Takes effect when the service starts or restarts.
      - C(GET /capf.crl) answers the active CAPF certificate's CRL, C(GET /capf-ID.crl) the CRL of the CAPF
        certificate whose SHA-256 fingerprint starts with the 16 hex digits ID (the location its LSCs name).
    type: int
  legacy_tls:
    description: Allow TLS 1.0 and legacy ciphers for old phone firmware. Default V(false).
    type: bool
  fips_mode:
    description: FIPS mode; refuses the Microsoft online CA type. Default V(false).
    type: bool
  monitor_warn_days:
    description:
      - Days before expiry at which the certificate monitor warns, 1–3650 each, at most 10 (default V([30, 7, 1])).
        Each certificate is warned about once per threshold (see O(monitor_resend)), and once more when it has
        expired.
    type: list
    elements: int
  monitor_interval_hours:
    description: How often the certificate monitor checks, 1–720 hours (default 24, daily).
    type: int
  monitor_recipients:
    description:
      - E-mail addresses the certificate monitor writes to (default none). With none the monitor only logs what it
        finds. Needs O(monitor_smtp_host) and O(monitor_sender).
    type: list
    elements: str
  monitor_resend:
    description:
      - V(once_per_threshold) warns about a certificate once per threshold of O(monitor_warn_days);
        V(every_check) repeats the warning on every check that finds it within the warn window. Default
        V(once_per_threshold).
    type: str
    choices: [once_per_threshold, every_check]
  monitor_smtp_host:
    description: Host name or IP address of the SMTP relay the monitor sends through (default none).
    type: str
  monitor_smtp_port:
    description: TCP port of the SMTP relay, 1–65535 (default 587; 465 is usual with V(tls), 25 with V(none)).
    type: int
  monitor_smtp_security:
    description:
      - V(starttls) upgrades the connection with STARTTLS, V(tls) speaks TLS from the start (implicit TLS),
        V(none) sends in clear (refused together with a login). Default V(starttls). The relay's certificate and
        host name are verified.
    type: str
    choices: [starttls, tls, none]
  monitor_smtp_ca_file:
    description:
      - Absolute path on the CAPF host of a PEM file with the CA certificates that verify the relay's certificate
        (default none, the system's trusted roots).
    type: str
  monitor_smtp_username:
    description: User name of the SMTP login (default none, no login). Needs O(monitor_smtp_password).
    type: str
  monitor_smtp_password:
    description:
      - Password of the SMTP login. Stored encrypted, never returned or logged. See O(update_password).
    type: str
  monitor_sender:
    description: The From address of the monitor's e-mail (default none; required with O(monitor_recipients)).
    type: str
  listen_addresses:
    description:
      - IP addresses the CAPF service listens on. Default V(0.0.0.0) (every IPv4 address of the host).
      - Takes effect when the service starts or restarts.
    type: list
    elements: str
  port:
    description:
      - TCP port of the CAPF service, 1–65535. Default V(3804), the CAPF port.
      - Takes effect when the service starts or restarts.
    type: int
  online_ca:
    description:
      - The online CA that signs LSCs when O(issuer=online_ca). Given, it replaces the stored settings as a whole.
    type: dict
    suboptions:
      hostname:
        description:
          - Host name of the CA. When the CA's HTTPS certificate is in C(capf-trust), the host name must equal
            its common name or one of its DNS names.
        type: str
        required: true
      port:
        description: HTTPS port of the CA (default 443).
        type: int
      type:
        description: V(microsoft) (AD CS web enrolment; not allowed in FIPS mode) or V(est) (RFC 7030).
        type: str
        required: true
        choices: [microsoft, est]
      template:
        description: Certificate template name; required with, and only allowed with, O(online_ca.type=microsoft).
        type: str
      profile_label:
        description: Certificate enrolment profile label; only allowed with O(online_ca.type=est).
        type: str
      username:
        description: User name for the CA.
        type: str
      auth:
        description: HTTP authentication towards the CA; V(ntlm) only with O(online_ca.type=microsoft). Default V(basic).
        type: str
        choices: [basic, ntlm]
      client_certificate:
        description:
          - Path (on the CAPF host) of a client certificate (PEM, optionally followed by its chain) for mutual TLS
            towards the CA. Needs O(online_ca.client_key).
          - Read when the settings are given; a file that is missing or holds no certificate fails the task with a
            message that starts with C(online_ca.client_certificate).
        type: path
      client_key:
        description:
          - Path of the client certificate's private key (unencrypted PEM, mode 0600 or stricter).
          - Read when the settings are given; a file that is missing, readable by others, not a key or not the key of
            O(online_ca.client_certificate) fails the task with a message that starts with C(online_ca.client_key).
        type: path
      ec_supported:
        description:
          - Whether this CA path can certify EC phone keys. Default V(true) for V(est), V(false) for V(microsoft).
            A phone EC key for a CA path that cannot take it fails the operation with a recorded reason.
        type: bool
      password:
        description: Password for the CA. Stored encrypted, never returned. See O(update_password).
        type: str
  update_password:
    description:
      - V(always) stores O(online_ca.password) and O(monitor_smtp_password) whenever they differ from the stored
        ones (compared by decrypting).
      - V(on_create) stores each only when no password is stored yet.
    type: str
    choices: [always, on_create]
    default: always
  capf_certificate:
    description: The CAPF certificate that signs LSCs and serves TLS.
    type: dict
    suboptions:
      key_type:
        description: Key of the CAPF certificate; a different key type than the active certificate's regenerates it.
        type: str
        choices: [rsa2048, rsa3072, rsa4096, ec256, ec384]
      regenerate:
        description: Generate a new CAPF certificate on every run (not idempotent by design).
        type: bool
        default: false
      certificate:
        description:
          - PEM of a CAPF certificate to install (CA:TRUE, pathlen:0, KeyUsage digitalSignature and keyCertSign).
          - Identified by fingerprint; a certificate that was active before and retired is refused.
          - It must be valid now (rule C(capf-valid-now)); an expired one, or one valid only from more than 5 minutes
            from now, is refused. The LSCs it signs end no later than its notAfter.
        type: str
      private_key:
        description: Unencrypted PEM private key of O(capf_certificate.certificate).
        type: str
  state:
    description:
      - State of the CAPF service process. Not set means the process is left alone.
      - V(reloaded) sends the running service SIGHUP (it reads the service parameters and the CAPF certificate again
        and reopens its log file, without ending a session) and starts it when it is not running; like V(restarted)
        it always reports a change.
    type: str
    choices: [started, stopped, restarted, reloaded]
  timeout:
    description: Seconds to wait for the service to accept TLS connections after a start, or to exit after a stop.
    type: int
    default: 30
notes:
  - O(listen_addresses), O(port), O(enable_ipv6) (listening on IPv6 addresses), O(processes), O(event_loop) and
    O(metrics_address) take effect when the service restarts; notify a handler that runs this module with O(state=restarted). Every other parameter and the
    CAPF certificate apply to the next connection without a restart; O(state=reloaded) (SIGHUP) makes the running
    service read them again at once and reopen its log file.
"""

EXAMPLES = r"""
- name: CAPF signs LSCs for two years, EC preferred, service running
  opencapf.capf.capf_service:
    issuer: capf
    validity_days: 730
    key_order: ec_preferred
    keepalive_minutes: 15
    capf_certificate:
      key_type: ec256
    state: started

- name: Online EST CA (upload its root and HTTPS certificate with capf_trust_cert first)
  opencapf.capf.capf_service:
    issuer: online_ca
    online_ca:
      hostname: ca.example.com
      port: 443
      type: est
      profile_label: phones
      username: capf
      password: "{{ vault_est_password }}"
    update_password: on_create
  notify: Restart CAPF

- name: Warn the voice team by e-mail 30, 7 and 1 days before a certificate expires
  opencapf.capf.capf_service:
    monitor_warn_days: [30, 7, 1]
    monitor_recipients: [voice-team@example.com]
    monitor_sender: capf@example.com
    monitor_smtp_host: smtp.example.com
    monitor_smtp_port: 587
    monitor_smtp_security: starttls
    monitor_smtp_username: capf
    monitor_smtp_password: "{{ vault_smtp_password }}"

- name: Restart the service (and with it the enrolment service)
  opencapf.capf.capf_service:
    state: restarted
"""

RETURN = r"""
parameters:
  description: Every service parameter after the run, keyed by its name (the options above of the same name).
  returned: always
  type: dict
  sample: {issuer: capf, validity_days: 730, keepalive_minutes: 15, key_order: ec_preferred, port: 3804,
           listen_addresses: [0.0.0.0], lockout_failures: 5, max_sessions: 1000}
online_ca:
  description: The online CA settings, or null when none are stored.
  returned: always
  type: dict
  sample: {hostname: ca.example.com, port: 443, type: est, profile_label: phones, username: capf, auth: basic,
           ec_supported: true, password: (set)}
  contains:
    hostname:
      description: Host name of the CA.
      type: str
    port:
      description: HTTPS port of the CA.
      type: int
    type:
      description: V(microsoft) or V(est).
      type: str
    template:
      description: Certificate template (Microsoft CA only).
      type: str
    profile_label:
      description: Certificate enrolment profile label (EST only).
      type: str
    username:
      description: User name for the CA.
      type: str
    auth:
      description: V(basic) or V(ntlm).
      type: str
    client_certificate:
      description: Path of the client certificate for mutual TLS, if any.
      type: str
    client_key:
      description: Path of its private key, if any.
      type: str
    ec_supported:
      description: Whether this CA path certifies EC phone keys.
      type: bool
    password:
      description: V((set)), V((unset)) or V((changed)); never the password.
      type: str
monitor_smtp_password:
  description: Whether the monitor's SMTP password is stored, V((set)), V((unset)) or V((changed)); never the password.
  returned: always
  type: str
  sample: (set)
capf_certificate:
  description: The active CAPF certificate.
  returned: always
  type: dict
  sample: {common_name: CAPF-7aaabd77, fingerprint: efb412ef97e1b680ab08191acedbcbe72c8c5c95138423f53628f37b1906863e,
           key_type: ec256, not_after: "2031-12-05T05:38:24Z", subject: CN=CAPF-7aaabd77, source: generated}
  contains:
    common_name:
      description: Its common name, V(CAPF-) and 8 hex digits unless uploaded.
      type: str
    fingerprint:
      description: SHA-256 fingerprint, 64 lower-case hex digits.
      type: str
    key_type:
      description: Its key, one of the O(capf_certificate.key_type) choices.
      type: str
    not_after:
      description: End of its validity, UTC.
      type: str
    subject:
      description: Its subject (RFC 4514).
      type: str
    source:
      description: V(generated) or V(uploaded).
      type: str
capf_certificate_action:
  description: What happened to the CAPF certificate, V(none), V(create), V(regenerate) or V(upload).
  returned: always
  type: str
changed_parameters:
  description: Names of the parameters that changed.
  returned: always
  type: list
  elements: str
service:
  description: Service state after the run.
  returned: when O(state) is set
  type: dict
  sample: {state: started, pid: 4242, running: true, accepting: true, address: 127.0.0.1, port: 3804,
           enrolment_service: inactive}
  contains:
    state:
      description: V(started) when the process runs and accepts TLS connections, else V(stopped).
      type: str
    pid:
      description: Process id of the running service, or null.
      type: int
    running:
      description: Whether the service process runs.
      type: bool
    accepting:
      description: Whether a TLS handshake on the port succeeds.
      type: bool
    address:
      description: The address probed.
      type: str
    port:
      description: The CAPF port.
      type: int
    enrolment_service:
      description: V(active) when the service runs with O(issuer=online_ca), else V(inactive).
      type: str
"""

from ansible_collections.opencapf.capf.plugins.module_utils._ansible_args import (
    argument_spec, create_module, drop_none, engine, exit_with)
from ansible_collections.opencapf.capf.plugins.module_utils._opencapf import parameters as p
from ansible_collections.opencapf.capf.plugins.module_utils._opencapf import (
    service_config, service_control)
from ansible_collections.opencapf.capf.plugins.module_utils._opencapf import vocabulary as v

_TYPES = {"integer": "int", "boolean": "bool", "string": "str", "array": "list"}


def _parameter_spec() -> dict:
    spec = {}
    for name, parameter in p.PARAMETERS.items():
        option = {"type": _TYPES[parameter.kind]}
        if parameter.choices:
            option["choices"] = list(parameter.choices)
        if parameter.kind == "array":
            option["elements"] = _TYPES[parameter.items]
        if name.startswith("keygen_"):
            option["no_log"] = False  # key-generation limits, not secrets
        spec[name] = option
    return spec


def main():
    spec = argument_spec(
        online_ca={"type": "dict", "options": {
            "hostname": {"type": "str", "required": True},
            "port": {"type": "int"},
            "type": {"type": "str", "required": True, "choices": list(v.ONLINE_CA_TYPES)},
            "template": {"type": "str"},
            "profile_label": {"type": "str"},
            "username": {"type": "str"},
            "auth": {"type": "str", "choices": list(service_config.ONLINE_CA_AUTH)},
            "client_certificate": {"type": "path"},
            "client_key": {"type": "path", "no_log": False},
            "ec_supported": {"type": "bool"},
            "password": {"type": "str", "no_log": True},
        }},
        update_password={"type": "str", "choices": list(service_config.UPDATE_PASSWORD), "default": "always",
                         "no_log": False},
        capf_certificate={"type": "dict", "options": {
            "key_type": {"type": "str", "choices": list(v.CAPF_KEY_TYPES)},
            "regenerate": {"type": "bool", "default": False},
            "certificate": {"type": "str"},
            "private_key": {"type": "str", "no_log": True},
        }},
        monitor_smtp_password={"type": "str", "no_log": True},
        state={"type": "str", "choices": list(service_control.STATES)},
        timeout={"type": "int", "default": 30},
        **_parameter_spec(),
    )
    module = create_module(spec)
    params = module.params
    with engine(module) as store:
        result = service_config.converge(
            store, parameters_wanted={name: params[name] for name in p.PARAMETERS},
            online_ca=drop_none(params["online_ca"]), capf_certificate=drop_none(params["capf_certificate"]),
            update_password=params["update_password"], monitor_smtp_password=params["monitor_smtp_password"],
            check_mode=module.check_mode)
        service = None
        if params["state"]:
            def launcher(argv, env):
                return module.run_command(argv, environ_update=env, cwd=env["OPENCAPF_STATE_DIR"])

            control = service_control.converge(store, params["state"], launcher, check_mode=module.check_mode,
                                               timeout=params["timeout"])
            result["changed"] = result["changed"] or control["changed"]
            result["before"]["service"] = control["before"]["state"]
            result["after"]["service"] = control["after"]["state"]
            service = control["service"]
    after = result["after"]
    extras = {"parameters": after["parameters"], "online_ca": after["online_ca"],
              "capf_certificate": after["capf_certificate"], "capf_certificate_action": result["capf_certificate_action"],
              "changed_parameters": result["changed_parameters"],
              "monitor_smtp_password": after["monitor_smtp_password"]}
    if service is not None:
        extras["service"] = service
    exit_with(module, result, **extras)


if __name__ == "__main__":
    main()
