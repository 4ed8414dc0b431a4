"""Device-scoped MQTT topics and who may use them (pure).

The same decisions serve the embedded broker's plugins and could serve an external
broker's HTTP auth hook: a device publishes and subscribes only under
``devices/{its own id}/``. See ``docs/protocol.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import parse_qsl, urlencode

from .errors import ValidationError

STREAM_PATTERN = re.compile(r"[0-9A-Za-z_.\-]{1,64}")
MESSAGE_ID_PATTERN = re.compile(r"[0-9A-Za-z_.:\-]{1,128}")
DEFAULT_STREAM = "default"


class TopicAction(StrEnum):
    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"
    RECEIVE = "receive"


class TopicKind(StrEnum):
    TELEMETRY = "telemetry"
    TWIN_GET = "twin_get"
    TWIN_REPORTED = "twin_reported"
    TWIN_RES = "twin_res"
    TWIN_DESIRED = "twin_desired"
    CLOUD_TO_DEVICE = "cloud_to_device"


# What a device may do on each kind of topic.
_DEVICE_PUBLISHES = {TopicKind.TELEMETRY, TopicKind.TWIN_GET, TopicKind.TWIN_REPORTED}
_DEVICE_RECEIVES = {TopicKind.TWIN_RES, TopicKind.TWIN_DESIRED, TopicKind.CLOUD_TO_DEVICE}
CLOUD_TO_DEVICE_LEVEL = "messages/devicebound"
"""``devices/{id}/messages/devicebound/{property bag}``: IoT Hub's cloud-to-device topic, in
both dialects (``{id}`` is the Device ID, or ``<workspace>:<device>`` in the IoT Hub one).
``devicebound`` is therefore no stream name: a device cannot publish there."""
_TWIN_SUFFIX = {
    "get": TopicKind.TWIN_GET,
    "reported": TopicKind.TWIN_REPORTED,
    "res": TopicKind.TWIN_RES,
    "desired": TopicKind.TWIN_DESIRED,
}


@dataclass(frozen=True)
class DeviceTopic:
    """A parsed topic under ``devices/{device_id}/``."""

    device_id: str
    kind: TopicKind
    stream: str | None = None
    message_id: str | None = None
    compression: str | None = None
    batch_id: str | None = None
    sequence: int | None = None
    batch_end: bool = False


def parse_topic(topic: str) -> DeviceTopic | None:
    """The device topic ``topic`` names, or None if it is not one of ours.

    >>> parse_topic("devices/pump-0001/messages/vibration/mid=42").message_id
    '42'
    """
    parts = topic.split("/")
    if len(parts) < 3 or parts[0] != "devices" or not parts[1]:
        return None
    device_id = parts[1]
    if parts[2] == "twin" and len(parts) == 4 and parts[3] in _TWIN_SUFFIX:
        return DeviceTopic(device_id, _TWIN_SUFFIX[parts[3]])
    if parts[2] != "messages" or len(parts) not in (4, 5):
        return None
    stream = parts[3]
    if stream == "devicebound":
        return DeviceTopic(device_id, TopicKind.CLOUD_TO_DEVICE)
    if not STREAM_PATTERN.fullmatch(stream):
        return None
    if len(parts) == 4:
        return DeviceTopic(device_id, TopicKind.TELEMETRY, stream)
    try:
        props = parse_message_properties(parts[4])
    except ValidationError:
        return None
    return DeviceTopic(device_id, TopicKind.TELEMETRY, stream, **props)  # type: ignore[arg-type]


def parse_message_properties(query: str) -> dict[str, object]:
    """The ``{properties}`` topic level: a URL-encoded ``mid=…&ce=zlib&batch=…&seq=…&last=1``.

    >>> parse_message_properties("mid=pump-1.42")
    {'message_id': 'pump-1.42'}
    >>> parse_message_properties("mid=a%3A1&ce=zlib")
    {'message_id': 'a:1', 'compression': 'zlib'}
    """
    if query.startswith("mid=") and MESSAGE_ID_PATTERN.fullmatch(query, 4):
        # The usual level, a lone message id: its characters need no URL decoding, so the
        # answer is parse_qsl's without its cost (~3 µs of the broker's time per message).
        return {"message_id": query[4:]}
    props: dict[str, object] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=True):
        if key == "mid":
            props["message_id"] = validate_message_id(value)
        elif key == "ce":
            if value != "zlib":
                raise ValidationError(f"unknown content encoding {value!r}", field="ce")
            props["compression"] = value
        elif key == "batch":
            props["batch_id"] = validate_message_id(value, field="batch")
        elif key == "seq":
            if not value.isdigit():
                raise ValidationError("seq must be a non-negative integer", field="seq")
            props["sequence"] = int(value)
        elif key == "last":
            props["batch_end"] = value == "1"
        else:
            raise ValidationError(f"unknown message property {key!r}", field=key)
    return props


def validate_stream(value: str, *, field: str = "stream") -> str:
    if not STREAM_PATTERN.fullmatch(value):
        raise ValidationError("stream must be 1-64 characters of 0-9 a-z A-Z - _ .", field=field)
    return value


def validate_message_id(value: str, *, field: str = "messageId") -> str:
    if not MESSAGE_ID_PATTERN.fullmatch(value):
        raise ValidationError(
            "message id must be 1-128 characters of 0-9 a-z A-Z - _ . :", field=field
        )
    return value


def device_may(device_id: str, action: TopicAction, topic: str) -> bool:
    """Whether the device may publish to, subscribe to, or receive on ``topic``.

    Subscriptions may use wildcards only within the device's own namespace
    (``devices/{id}/twin/+`` or ``devices/{id}/#``); ``+`` or ``#`` in place of the Device
    ID would reach other devices and is refused.

    >>> device_may("pump-1", TopicAction.SUBSCRIBE, "devices/pump-1/messages/devicebound/#")
    True
    >>> device_may("pump-1", TopicAction.PUBLISH, "devices/pump-1/messages/devicebound")
    False
    """
    prefix = f"devices/{device_id}/"
    if not topic.startswith(prefix):
        return False
    if action is TopicAction.SUBSCRIBE:
        rest = topic[len(prefix) :]
        return rest in ("#", "twin/+", "twin/res", "twin/desired", f"{CLOUD_TO_DEVICE_LEVEL}/#")
    if action is TopicAction.PUBLISH:
        return device_publication(device_id, topic) is not None
    parsed = parse_topic(topic)
    return parsed is not None and parsed.device_id == device_id and parsed.kind in _DEVICE_RECEIVES


def device_publication(device_id: str, topic: str) -> DeviceTopic | None:
    """The parsed ``topic`` if the device may publish on it, else None: the publish ACL
    decision (:func:`device_may`) and the parse the broker needs next, in one pass.

    >>> device_publication("pump-1", "devices/pump-1/messages/vibration/mid=7").stream
    'vibration'
    >>> device_publication("pump-1", "devices/pump-2/messages/vibration") is None
    True
    >>> device_publication("pump-1", "devices/pump-1/twin/desired") is None
    True
    """
    parsed = parse_topic(topic)
    if parsed is None or parsed.device_id != device_id or parsed.kind not in _DEVICE_PUBLISHES:
        return None
    return parsed


def twin_topic(device_id: str, suffix: str) -> str:
    return f"devices/{device_id}/twin/{suffix}"


# The IoT Hub MQTT dialect (Azure IoT Hub's device topics, as Spotflow's SDK uses them) ----

HUB_TELEMETRY_LEVEL = "messages/events"
"""``devices/<workspace>:<device>/messages/events/<property bag>``: a device's telemetry."""

_HUB_IGNORED_FLAGS = ("has-externalized-payload", "ignore-payload", "content-encoding")


def hub_telemetry_topic(hub_device_id: str, device_id: str, topic: str) -> str | None:
    """The native topic a telemetry PUBLISH of the IoT Hub dialect stands for, or None when
    ``topic`` is not the device's own ``devices/<hub_device_id>/messages/events/…`` or its
    property bag asks for something the platform does not do.

    The property bag is the URL-encoded ``key=value&…`` Spotflow's SDK writes
    (``spotflow/src/iothub/sender.rs``): ``stream-name`` gives the stream (``default``
    without one) and ``message-id`` the id messages are de-duplicated by, exactly as a
    native ``mid``. ``stream-group-name``, ``site-id``, ``batch-id``, ``batch-slice-id``,
    ``chunk-id``, ``complete-batch``, ``complete-message`` and IoT Hub's other application
    and ``$.`` system properties are accepted and ignored (IoT Hub passes unknown
    properties on). Refused (None): Brotli ``content-encoding`` (the platform decodes zlib
    only), ``has-externalized-payload`` (a link to a file upload the platform does not
    serve) and ``ignore-payload`` (a batch-closing message with nothing to store).

    >>> hub_telemetry_topic("default:pump-1", "pump-1",
    ...     "devices/default:pump-1/messages/events/stream-name=vibration&message-id=m%3A1")
    'devices/pump-1/messages/vibration/mid=m%3A1'
    >>> hub_telemetry_topic("default:pump-1", "pump-1", "devices/default:pump-1/messages/events/")
    'devices/pump-1/messages/default'
    >>> hub_telemetry_topic("default:pump-1", "pump-1", "devices/default:pump-2/messages/events/")
    """
    prefix = f"devices/{hub_device_id}/{HUB_TELEMETRY_LEVEL}"
    if topic != prefix and not topic.startswith(prefix + "/"):
        return None
    bag = topic[len(prefix) + 1 :]
    try:
        properties = dict(parse_qsl(bag, keep_blank_values=True)) if bag else {}
    except ValueError:
        return None
    if any(flag in properties for flag in _HUB_IGNORED_FLAGS):
        return None
    try:
        stream = validate_stream(properties.get("stream-name", DEFAULT_STREAM), field="stream-name")
        message_id = properties.get("message-id")
        if message_id is not None:
            validate_message_id(message_id, field="message-id")
    except ValidationError:
        return None
    native = f"devices/{device_id}/messages/{stream}"
    return native if message_id is None else f"{native}/{urlencode({'mid': message_id})}"


HUB_TWIN_SUBSCRIPTIONS = ("$iothub/twin/res/#", "$iothub/twin/PATCH/properties/desired/#")
"""What Spotflow's SDK subscribes to for its twin (besides cloud-to-device messages)."""
_HUB_TWIN_REQUESTS = {
    "$iothub/twin/GET/": TopicKind.TWIN_GET,
    "$iothub/twin/PATCH/properties/reported/": TopicKind.TWIN_REPORTED,
}
_REQUEST_ID_PATTERN = MESSAGE_ID_PATTERN


def hub_may_subscribe(hub_device_id: str, topic_filter: str) -> bool:
    """Whether an IoT Hub dialect session may subscribe to ``topic_filter``: the twin
    answers and desired patches (sent to the session itself, never broadcast, so these
    filters reach nobody else's) and its own cloud-to-device topic.

    >>> hub_may_subscribe("default:pump-1", "$iothub/twin/res/#")
    True
    >>> hub_may_subscribe("default:pump-1", "$iothub/#")
    False
    """
    return (
        topic_filter in HUB_TWIN_SUBSCRIPTIONS
        or topic_filter == f"devices/{hub_device_id}/messages/devicebound/#"
    )


def parse_hub_twin_request(topic: str) -> tuple[TopicKind, str] | None:
    """``(TWIN_GET | TWIN_REPORTED, request id)`` for IoT Hub's
    ``$iothub/twin/GET/?$rid=…`` and ``$iothub/twin/PATCH/properties/reported/?$rid=…``,
    else None (also for a request id that could not be echoed safely in a topic).

    >>> parse_hub_twin_request("$iothub/twin/GET/?$rid=7f3c-1")
    (<TopicKind.TWIN_GET: 'twin_get'>, '7f3c-1')
    >>> parse_hub_twin_request("$iothub/twin/GET/?$rid=a/b") is None
    True
    """
    for prefix, kind in _HUB_TWIN_REQUESTS.items():
        if topic.startswith(prefix + "?"):
            query = dict(parse_qsl(topic[len(prefix) + 1 :], keep_blank_values=True))
            rid = query.get("$rid", "")
            return (kind, rid) if _REQUEST_ID_PATTERN.fullmatch(rid) else None
    return None


def hub_twin_response_topic(status: int, request_id: str, version: int | None = None) -> str:
    """``$iothub/twin/res/{status}/?$rid={request id}[&$version={version}]``.

    >>> hub_twin_response_topic(204, "r1", 3)
    '$iothub/twin/res/204/?$rid=r1&$version=3'
    """
    tail = "" if version is None else f"&$version={version}"
    return f"$iothub/twin/res/{status}/?$rid={request_id}{tail}"


def hub_desired_topic(version: int) -> str:
    """``$iothub/twin/PATCH/properties/desired/?$version={version}``."""
    return f"$iothub/twin/PATCH/properties/desired/?$version={version}"


def cloud_to_device_topic(topic_device_id: str, message_id: str, properties: dict[str, str]) -> str:
    """``devices/{topic_device_id}/messages/devicebound/{property bag}`` as IoT Hub writes
    it: the system properties ``$.mid`` (the message id) and ``$.to``, then the
    application properties, URL-encoded (Spotflow's SDK parses the bag with a URL query
    parser, ``spotflow/src/iothub/handlers/c2d.rs``).

    >>> cloud_to_device_topic("default:pump-1", "m1", {"cmd": "reboot now"})
    'devices/default:pump-1/messages/devicebound/%24.mid=m1&%24.to=%2Fdevices%2Fdefault%3Apump-1%2Fmessages%2FdeviceBound&cmd=reboot+now'
    """
    bag = {"$.mid": message_id, "$.to": f"/devices/{topic_device_id}/messages/deviceBound"}
    bag.update(properties)
    return f"devices/{topic_device_id}/{CLOUD_TO_DEVICE_LEVEL}/{urlencode(bag)}"


def subscribes_to_cloud_to_device(topic_filter: str, topic_device_id: str) -> bool:
    """Whether a subscription ``topic_filter`` (already allowed by the ACL) receives the
    device's cloud-to-device messages.

    >>> subscribes_to_cloud_to_device("devices/pump-1/#", "pump-1")
    True
    >>> subscribes_to_cloud_to_device("devices/pump-1/twin/+", "pump-1")
    False
    """
    prefix = f"devices/{topic_device_id}/"
    return topic_filter in (prefix + "#", f"{prefix}{CLOUD_TO_DEVICE_LEVEL}/#")
