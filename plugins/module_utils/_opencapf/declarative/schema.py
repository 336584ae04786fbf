# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The JSON Schema of the declarative file, generated from the engine's single source of truth.

Every leaf may carry ``x-rule`` (the rule in words, used in error messages) and ``x-secret``
(the value is never echoed back).
"""

from __future__ import annotations

from .. import parameters, vocabulary as v
from ..phone_query import LSC_STATUSES, QUERY_FIELDS
from ..service_config import ONLINE_CA_FIELDS

FORMAT_VERSION = 1
_NAME_RULE = ("must be SEP (or ATA/AN/BAT) followed by 12 hex digits, or a CSF/BOT/TCT/TAB/CTI/UPC/EC prefix "
              "followed by 1\u201346 letters, digits, '.', '_' or '-'")
DEVICE_NAME = {
    "type": "string",
    "pattern": r"^(?i:(SEP|ATA|AN|BAT)[0-9A-F]{12}|(CSF|BOT|TCT|TAB|CTI|UPC|EC)[A-Z0-9_.-]{1,46})$",
    "x-rule": _NAME_RULE,
}
AUTH_STRING = {
    "type": "string",
    "pattern": "^[0-9]{%d,%d}$" % v.AUTH_STRING_DIGITS,
    "x-rule": "must be %d\u2013%d digits (quote it in YAML so it stays a string)" % v.AUTH_STRING_DIGITS,
    "x-secret": True,
}
TIMESTAMP = {"type": "string", "minLength": 10, "maxLength": 40, "x-rule": v.TIME_RULE}
# A phone's deadline: a time, or none, which clears it; a template's: a time only.
DEADLINE = {"anyOf": [dict(TIMESTAMP, **{"x-rule": v.DEADLINE_RULE}), {"const": v.NO_DEADLINE}],
            "x-rule": v.DEADLINE_RULE}
TEMPLATE_DEADLINE = dict(TIMESTAMP, **{"x-rule": v.TEMPLATE_DEADLINE_RULE})
TEXT = {"type": "string", "maxLength": 200}
PEM = {"type": "string", "minLength": 1, "maxLength": 1024 * 1024,
       "x-rule": "must be PEM text (-----BEGIN CERTIFICATE----- ...)"}
PATH = {"type": "string", "minLength": 1, "maxLength": 4096}
TEMPLATE_NAME = {"type": "string", "pattern": "^%s$" % v.TEMPLATE_NAME_PATTERN, "x-rule": v.TEMPLATE_NAME_RULE}


def _enum(choices, rule=None):
    return {"enum": list(choices), "x-rule": rule or "must be one of %s" % ", ".join(map(str, choices))}


def _range(bounds, unit=""):
    low, high = bounds
    return {"type": "integer", "minimum": low, "maximum": high, "x-rule": f"must be {low}\u2013{high}{unit}"}


def _parameter(parameter: parameters.Parameter) -> dict:
    if parameter.kind == "array":
        items = _range(parameter.bounds) if parameter.bounds is not None else {"type": parameter.items}
        return {"type": "array", "minItems": 1 if parameter.default else 0, "items": items}
    if parameter.choices is not None:
        return _enum(parameter.choices)
    if parameter.bounds is not None:
        return _range(parameter.bounds)
    if parameter.kind == "boolean":
        return {"type": "boolean", "x-rule": "must be true or false"}
    return {"type": parameter.kind}


def _strict(properties: dict, required=(), **extra) -> dict:
    result = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        result["required"] = list(required)
    result.update(extra)
    return result


def phone_settings(deadline=None) -> dict:
    """The per-phone CAPF settings, as named by capf_phone (a template's deadline: ``TEMPLATE_DEADLINE``)."""
    return {
        "description": TEXT,
        "model": {"type": "string", "maxLength": 64},
        "device_pool": {"type": "string", "maxLength": 64},
        "security_mode": _enum(v.SECURITY_MODES),
        "certificate_operation": _enum(v.OPERATIONS),
        "authentication_mode": _enum(v.AUTH_MODES),
        "key_order": _enum(v.KEY_ORDERS),
        "rsa_key_size": _enum(v.RSA_KEY_SIZES),
        "ec_key_size": _enum(v.EC_KEY_SIZES),
        "operation_completes_by": deadline or DEADLINE,
    }


def query() -> dict:
    properties = {
        "names": {"type": "array", "items": DEVICE_NAME},
        "name_pattern": {"type": "string", "maxLength": 64},
        "device_pool": {"type": ["string", "array"]},
        "model": {"type": ["string", "array"]},
        "security_mode": {"anyOf": [_enum(v.SECURITY_MODES), {"type": "array", "items": _enum(v.SECURITY_MODES)}]},
        "certificate_operation": {"anyOf": [_enum(v.OPERATIONS), {"type": "array", "items": _enum(v.OPERATIONS)}]},
        "operation_status": {"anyOf": [_enum(v.OPERATION_STATUSES),
                                       {"type": "array", "items": _enum(v.OPERATION_STATUSES)}]},
        "lsc_status": {"anyOf": [_enum(LSC_STATUSES), {"type": "array", "items": _enum(LSC_STATUSES)}]},
        "lsc_expires_before": TIMESTAMP,
        "locked": {"type": "boolean", "x-rule": "must be true or false"},
    }
    return _strict({name: properties[name] for name in QUERY_FIELDS})


def schema() -> dict:
    """The whole JSON Schema (draft 2020-12)."""
    online_ca_properties = {
        "hostname": {"type": "string", "minLength": 1, "maxLength": 253},
        "port": _range(v.PORT),
        "type": _enum(v.ONLINE_CA_TYPES),
        "template": TEXT,
        "profile_label": TEXT,
        "username": TEXT,
        "auth": _enum(("basic", "ntlm")),
        "client_certificate": TEXT,
        "client_key": TEXT,
        "ec_supported": {"type": "boolean"},
        "password": {"type": "string", "minLength": 1, "maxLength": 1024, "x-secret": True},
        "password_env": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
                         "x-rule": "must name an environment variable"},
    }
    online_ca_properties = {name: online_ca_properties[name] for name in ONLINE_CA_FIELDS + ("password", "password_env")}
    trust_item = _strict(
        {
            "trust_store": {"anyOf": [_enum(v.TRUST_STORES), {"type": "array", "items": _enum(v.TRUST_STORES)}]},
            "content": PEM,
            "path": PATH,
            "ca_root": PEM,
            "https_certificate": PEM,
            "intermediates": {"type": "array", "items": PEM},
            "description": TEXT,
            "remove_legacy_mic_roots": {"type": "boolean"},
            "strict_ca_rules": {"type": "boolean", "x-rule": "must be true or false (true refuses CA certificates "
                                                             "that deviate from the CA rules without harm)"},
            "state": _enum(("present", "absent")),
        }
    )
    phone = _strict(
        dict(phone_settings(), **{
            "name": DEVICE_NAME,
            "state": _enum(("present", "absent")),
            "authentication_string": AUTH_STRING,
            "generate_authentication_string": {"type": "boolean"},
            "authentication_string_length": _range(v.AUTH_STRING_DIGITS, " digits"),
            "reissue": {"type": "boolean"},
        }),
        required=("name",),
    )
    bulk_item = _strict(
        {
            "name": TEXT,
            "query": query(),
            "set": _strict(phone_settings()),
            "authentication_string": AUTH_STRING,
            "generate_authentication_strings": {"type": "boolean"},
            "authentication_string_length": _range(v.AUTH_STRING_DIGITS, " digits"),
            "strings_file": PATH,
            "reissue": {"type": "boolean"},
            "apply_config": {"type": "boolean"},
            "fail_on_unmatched": {"type": "boolean", "x-rule": "must be true or false (true fails when query.names "
                                                               "names devices that are not in the store)"},
        },
        required=("query",),
    )
    template = _strict(
        dict(phone_settings(TEMPLATE_DEADLINE), **{
            "name": TEMPLATE_NAME,
            "state": _enum(("present", "absent")),
            "authentication_string": AUTH_STRING,
            "generate_authentication_string": {"type": "boolean"},
            "authentication_string_length": _range(v.AUTH_STRING_DIGITS, " digits"),
            "operation_completes_in_days": _range(v.DEADLINE_DAYS, " days"),
            "devices": {"type": "array", "items": DEVICE_NAME},
            "variables": {"type": "object", "additionalProperties": TEXT,
                          "propertyNames": {"pattern": "^%s$" % v.PLACEHOLDER_PATTERN}},
            "existing": _enum(v.TEMPLATE_EXISTING),
        }),
        required=("name",),
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://opencapf.example/schemas/deployment-v1.json",
        "title": "opencapf CAPF deployment",
        "type": "object",
        "additionalProperties": False,
        "required": ["opencapf"],
        "properties": {
            "opencapf": {"const": FORMAT_VERSION, "x-rule": f"must be {FORMAT_VERSION} (the file format version)"},
            "service": _strict({
                "parameters": _strict({name: _parameter(p) for name, p in parameters.PARAMETERS.items()}),
                "online_ca": _strict(online_ca_properties, required=("hostname", "type")),
                "monitor_smtp_password": online_ca_properties["password"],
                "monitor_smtp_password_env": online_ca_properties["password_env"],
                "capf_certificate": _strict({
                    "key_type": _enum(v.CAPF_KEY_TYPES),
                    "certificate": PEM,
                    "private_key_file": PATH,
                }),
            }),
            "trust": {"type": "array", "items": trust_item},
            "templates": {"type": "array", "items": template},
            "phones": {"type": "array", "items": phone},
            "bulk": {"type": "array", "items": bulk_item},
        },
    }
