"""Shared Access Signatures (SAS) as Azure IoT Hub and Spotflow's device SDK use them.

Spotflow's ``PUT /devices/register`` answers a connection string::

    HostName=<mqtt host>;DeviceId=<workspace>:<device>;SharedAccessSignature=
        SharedAccessSignature sr=<resource>&sig=<signature>&se=<expiry>

(one line, no break after ``SharedAccessSignature=``)

and the SDK sends the ``SharedAccessSignature sr=…&sig=…&se=…`` part as its MQTT
password. As in IoT Hub, ``sr`` is the URL-encoded resource ``<host>/devices/<device id>``,
``se`` the expiry in Unix seconds and ``sig`` the URL-encoded Base64 HMAC-SHA256 of
``"<sr>\\n<se>"`` (``sr`` as it appears in the token, encoded) under the device's key.

The device's key is never stored: it is derived from the platform's signing key and the
Registration Token's id (:func:`device_key`), so a SAS dies with its RT (the broker
accepts it only while that RT is usable), a refresh or a new provisioning gives a new key,
and the database holds nothing that signs. HMAC verification needs the key itself (a hash
of it could not check a signature), hence a derivation from one secret kept outside the
database rather than a per-device key stored hashed.

>>> key = device_key(b"k" * 32, "rt-id-1")
>>> token = sign(resource_uri("127.0.0.1", "default:pump-1"), key, 1_800_000_000)
>>> token.startswith("SharedAccessSignature sr=127.0.0.1%2Fdevices%2Fdefault%3Apump-1&sig=")
True
>>> parsed = parse(token)
>>> parsed is not None and verify(parsed, key) and parsed.expiry
1800000000
>>> verify(parsed, device_key(b"k" * 32, "rt-id-2"))
False
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import quote, unquote

PREFIX = "SharedAccessSignature "
CONNECTION_STRING_TYPE = "SharedAccessSignature"
INFINITE_TOKEN_SAS_LIFETIME = timedelta(days=1)
"""How long a SAS lasts when its Registration Token never expires: the SDK registers again
when its SAS expires (it checks every 60 s), so the connection string is renewed daily
rather than being a bearer credential for ever."""
_KEY_LABEL = b"iiotsim device SAS key\x00"


def iot_hub_device_id(workspace_id: str, device_id: str) -> str:
    """The ``<workspace>:<device>`` id the IoT Hub dialect uses (MQTT client id, ``DeviceId``)."""
    return f"{workspace_id}:{device_id}"


def resource_uri(host: str, hub_device_id: str) -> str:
    """The resource a device's SAS grants: ``<host>/devices/<workspace>:<device>``."""
    return f"{host}/devices/{hub_device_id}"


def device_key(signing_key: bytes, registration_token_id: str) -> bytes:
    """The per-device, per-RT key: HMAC-SHA256 of the RT's id under the platform's signing
    key (a key derivation; 32 bytes)."""
    return hmac.new(signing_key, _KEY_LABEL + registration_token_id.encode(), "sha256").digest()


def _signature(encoded_resource: str, expiry: int, key: bytes) -> str:
    mac = hmac.new(key, f"{encoded_resource}\n{expiry}".encode(), hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def sign(resource: str, key: bytes, expiry: int) -> str:
    """A SAS token for ``resource`` valid until ``expiry`` (Unix seconds)."""
    encoded = quote(resource, safe="")
    signature = quote(_signature(encoded, expiry, key), safe="")
    return f"{PREFIX}sr={encoded}&sig={signature}&se={expiry}"


@dataclass(frozen=True)
class SasToken:
    """A parsed SAS: the resource (decoded), its encoded form as signed, signature, expiry."""

    resource: str
    encoded_resource: str
    signature: str
    expiry: int


def parse(token: str) -> SasToken | None:
    """The parts of a ``SharedAccessSignature sr=…&sig=…&se=…`` token, None if it is not one.

    >>> parse("mp_not-a-sas") is None
    True
    """
    if not token.startswith(PREFIX):
        return None
    fields = dict(part.split("=", 1) for part in token[len(PREFIX) :].split("&") if "=" in part)
    if not {"sr", "sig", "se"} <= fields.keys() or not fields["se"].isdigit():
        return None
    return SasToken(unquote(fields["sr"]), fields["sr"], unquote(fields["sig"]), int(fields["se"]))


def verify(token: SasToken, key: bytes) -> bool:
    """Whether ``token``'s signature is ``key``'s (constant-time); the caller checks the
    expiry against its clock and the resource against the device."""
    expected = _signature(token.encoded_resource, token.expiry, key)
    return hmac.compare_digest(expected.encode(), token.signature.encode())


def connection_string(host: str, hub_device_id: str, sas: str) -> str:
    """The connection string Spotflow's register answers (``connectionString``)."""
    return f"HostName={host};DeviceId={hub_device_id};SharedAccessSignature={sas}"


def dotnet_time_span(seconds: float) -> str:
    """A duration as .NET's ``TimeSpan`` prints it (``[d.]hh:mm:ss``, whole seconds rounded
    down), as Spotflow's ``tokenRemainingLifetime`` is.

    >>> dotnet_time_span(3600), dotnet_time_span(86400 * 2 + 61.9), dotnet_time_span(-5)
    ('01:00:00', '2.00:01:01', '00:00:00')
    """
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}.{clock}" if days else clock
