"""Shared pieces of the end-to-end protocol tests."""

from __future__ import annotations

import asyncio

from _opencapf.simulator.client import Target, enrol
from _opencapf.simulator.identity import PhoneIdentity, PhoneSettings


def target(server, addresses=("127.0.0.1",), **options) -> Target:
    options.setdefault("timeout", 10.0)
    options.setdefault("cadata", server.capf_pem)
    return Target(tuple(addresses), server.port, **options)


def run_enrol(identity, server, addresses=("127.0.0.1",), behaviour=None, retries=0, retry_interval=0.05,
              target_options=None, **options):
    return asyncio.run(asyncio.wait_for(
        enrol(identity, target(server, addresses, **(target_options or {})), behaviour=behaviour, retries=retries,
              retry_interval=retry_interval, **options), 60))


def phone(tmp_path, name, mic_ca=None, **settings) -> PhoneIdentity:
    return PhoneIdentity.create(str(tmp_path / "phones" / name), PhoneSettings(name, **settings), mic_ca=mic_ca)
