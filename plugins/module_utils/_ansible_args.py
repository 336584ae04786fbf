# -*- coding: utf-8 -*-
# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The thin layer between Ansible and the engine: shared argument specs, module creation,
store opening, engine errors as ``fail_json``, and results with diffs.

This is the only module_utils file that imports Ansible; the engine (``_opencapf``) never does.
Choices come from the engine's vocabulary, so the argument specs and the engine cannot drift
(and ``validate-modules`` checks the documentation against them).
"""

from __future__ import annotations

import contextlib
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.opencapf.capf.plugins.module_utils._opencapf import dependencies
from ansible_collections.opencapf.capf.plugins.module_utils._opencapf import vocabulary as v
from ansible_collections.opencapf.capf.plugins.module_utils._opencapf.errors import CapfError
from ansible_collections.opencapf.capf.plugins.module_utils._opencapf.phone_query import LSC_STATUSES
from ansible_collections.opencapf.capf.plugins.module_utils._opencapf.store import open_store

ACTOR = "ansible"


def store_argument_spec() -> dict:
    """Options every module has (documented in the opencapf.capf.capf doc fragment)."""
    return {"store": {"type": "str"}}


def argument_spec(**options) -> dict:
    spec = store_argument_spec()
    spec.update(options)
    return spec


def query_argument_spec() -> dict:
    """The bulk-administration query (doc fragment opencapf.capf.capf.query)."""
    return {
        "query": {
            "type": "dict",
            "options": {
                "names": {"type": "list", "elements": "str"},
                "name_pattern": {"type": "str"},
                "device_pool": {"type": "list", "elements": "str"},
                "model": {"type": "list", "elements": "str"},
                "security_mode": {"type": "list", "elements": "str", "choices": list(v.SECURITY_MODES)},
                "certificate_operation": {"type": "list", "elements": "str", "choices": list(v.OPERATIONS)},
                "operation_status": {"type": "list", "elements": "str", "choices": list(v.OPERATION_STATUSES)},
                "lsc_status": {"type": "list", "elements": "str", "choices": list(LSC_STATUSES)},
                "lsc_expires_before": {"type": "str"},
                "locked": {"type": "bool"},
            },
        },
    }


def phone_settings_argument_spec() -> dict:
    """The CAPF settings of a device: options of capf_phone and capf_device_template (doc fragment
    opencapf.capf.capf.phone_settings) and suboptions of capf_bulk_update's ``set``."""
    return {
        "model": {"type": "str"},
        "device_pool": {"type": "str"},
        "security_mode": {"type": "str", "choices": list(v.SECURITY_MODES)},
        "certificate_operation": {"type": "str", "choices": list(v.OPERATIONS)},
        "authentication_mode": {"type": "str", "choices": list(v.AUTH_MODES)},
        "key_order": {"type": "str", "choices": list(v.KEY_ORDERS)},
        "rsa_key_size": {"type": "int", "choices": list(v.RSA_KEY_SIZES)},
        "ec_key_size": {"type": "int", "choices": list(v.EC_KEY_SIZES)},
    }


def drop_none(values: dict | None) -> dict | None:
    if values is None:
        return None
    return {key: value for key, value in values.items() if value is not None}


def create_module(spec: dict, **kwargs) -> AnsibleModule:
    """An AnsibleModule with check mode, failing cleanly when cryptography is missing."""
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True, **kwargs)
    if dependencies.missing("cryptography"):
        module.fail_json(msg=missing_required_lib("cryptography"),
                         exception=str(dependencies.CRYPTOGRAPHY_IMPORT_ERROR))
    return module


@contextlib.contextmanager
def engine(module: AnsibleModule):
    """Open the store and turn engine errors into ``fail_json`` with the engine's message.

    In check mode the store is opened read-only: nothing is written to it or beside it. A store
    that does not exist yet is planned against as an empty store, and one at an older schema
    version through a migrated temporary copy: exactly what the real run would start from.
    """
    store = None
    try:
        store = open_store(module.params["store"], actor=ACTOR, read_only=module.check_mode)
        yield store
    except CapfError as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg=f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}",
                         exception=traceback.format_exc())
    finally:
        if store is not None:
            store.close()


def warn_all(module: AnsibleModule, warnings) -> None:
    """Hand the engine's warnings (each naming its option and rule) to Ansible's task warnings."""
    for text in warnings or ():
        module.warn(text)


def exit_with(module: AnsibleModule, result: dict, **extras) -> None:
    """Exit with the engine's result: before/after become the diff (or ``diff_text``, a diff the engine
    wrote out itself, shown as it is), only when diff was asked for; the engine's ``warnings`` become
    task warnings."""
    result = dict(result)
    warn_all(module, result.pop("warnings", None))
    before = result.pop("before", None)
    after = result.pop("after", None)
    prepared = result.pop("diff_text", None)
    payload = {"changed": result.pop("changed")}
    payload.update(extras)
    if module._diff and prepared is not None:  # pylint: disable=protected-access
        payload["diff"] = {"prepared": prepared}
    elif module._diff:  # pylint: disable=protected-access
        payload["diff"] = {"before": before if before is not None else {}, "after": after if after is not None else {}}
    module.exit_json(**payload)
