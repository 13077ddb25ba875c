"""Okta's telephony inline hook, as pydantic models: the request Okta sends and the answers it accepts.

One model per JSON object, names and nesting as in Okta's payload (snake_case here, camelCase on the
wire). Validation lives here, so the handler receives typed, trusted objects. Parse a request with
`parse_hook_request`; the phone number is normalised to E.164 using the `default_country` context.
"""

# No `from __future__ import annotations` here: pydantic would evaluate every annotation string when
# a model is built, at every cold start.
import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, WithJsonSchema, field_validator
from pydantic.alias_generators import to_camel

from telephony import phone

TELEPHONY_EVENT_TYPE: Final = "com.okta.telephony.provider"
TELEPHONY_ACTION: Final = "com.okta.telephony.action"
KNOWN_REQUEST_TYPES = frozenset(
    {
        "com.okta.user.telephony.pre-enrollment",
        "com.okta.user.telephony.mfa-verification",
        "com.okta.user.telephony.account-unlock",
        "com.okta.user.telephony.password-reset",
    }
)

DeliveryChannel = Literal["sms", "voice"]

# Okta's docs have said "SMS or CALL", then "SMS or voice call"; the OpenAPI spec says "voice";
# a captured Preview request said "Voice". Letters only, lower case, decide.
_CHANNEL_SPELLINGS: dict[str, DeliveryChannel] = {
    "sms": "sms",
    "text": "sms",
    "call": "voice",
    "voice": "voice",
    "voicecall": "voice",
}


def _as_text(value: Any) -> Any:
    """A JSON scalar as text ('1', '0.1', 'true'); anything else is left for pydantic to refuse."""
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return value


def _object_or_none(value: Any) -> Any:
    """An object is read; anything else in its place means the same as its absence (objects the hook
    reads only for its log line or the Preview flag; the published schema shows the object)."""
    return value if isinstance(value, dict) else None


_SCALAR_TYPES = ["string", "number", "integer", "boolean", "null"]
# Fields the hook never acts on: Okta's spec types them as strings yet shows `1` and `0.1` as examples,
# and a number there must not send every code to Okta's fallback provider. Kept as text.
LenientText = Annotated[str | None, BeforeValidator(_as_text), WithJsonSchema({"type": _SCALAR_TYPES})]


class OktaModel(BaseModel):
    """Okta's JSON: camelCase keys, unknown keys ignored, surrounding blanks trimmed."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        str_strip_whitespace=True,
        frozen=True,
    )


# ---------------------------------------------------------------------------------------- request


class RequestUrl(OktaModel):
    value: LenientText = Field(
        None,
        description="Path of the Okta request that triggered the hook; Preview ends in /generatePreview.",
        examples=["/api/internal/v1/inlineHooks/com.okta.telephony.provider/generatePreview"],
    )


class OktaRequest(OktaModel):
    id: LenientText = Field(None, description="Okta's request id.", examples=["reqRgSk8IBBRhuo0YdlEDTmUw"])
    method: LenientText = Field(None, description="HTTP method of Okta's request.", examples=["POST"])
    url: Annotated[RequestUrl | None, BeforeValidator(_object_or_none)] = Field(
        None, description="The URL of the Okta request that triggered the hook."
    )
    ip_address: LenientText = Field(None, description="End user's IP address.", examples=["127.0.0.1"])


class RequestContext(OktaModel):
    request: Annotated[OktaRequest | None, BeforeValidator(_object_or_none)] = Field(
        None, description="The end user's request to Okta."
    )


class UserProfile(OktaModel):
    """The user the code is for. Personal data: never logged."""

    first_name: LenientText = Field(None, description="User's first name.", examples=["test"])
    last_name: LenientText = Field(None, description="User's last name.", examples=["user"])
    login: LenientText = Field(None, description="User's Okta login.", examples=["test.user@okta.com"])
    user_id: LenientText = Field(None, description="User's Okta id.", examples=["00uyxxSknGtK8022w0g3"])


class MessageProfile(OktaModel):
    """What to send, where, and how. Every field is a string on the wire."""

    msg_template: str | None = Field(
        None,
        description="Okta's rendered, localised SMS text, already containing the code. Not for voice.",
        examples=["(HOOK)Your code is 11111"],
    )
    phone_number: str = Field(
        description="Recipient, normalised here to E.164 (Okta's docs send national digits without '+').",
        examples=["+14155550123", "9876543210"],
    )
    otp_expires: datetime | None = Field(
        None, description="When the code stops working (ISO-8601, UTC).", examples=["2022-01-28T21:48:34.321Z"]
    )
    delivery_channel: DeliveryChannel = Field(
        description="'sms' or 'voice', read from any spelling Okta uses: SMS, CALL, voice, Voice call.",
        examples=["SMS", "CALL", "Voice"],
    )
    otp_code: str = Field(
        pattern=r"^[0-9]{4,12}$",
        description="The one-time code: digits only. Secret: never logged or echoed.",
        examples=["11111"],
    )
    locale: str | None = Field(
        None, description="The user's locale, as Okta writes it.", examples=["EN-US", "en", "es_ES"]
    )

    @field_validator("delivery_channel", mode="before")
    @classmethod
    def _read_channel(cls, value: Any) -> Any:
        if isinstance(value, str):
            letters = re.sub(r"[^a-z]", "", value.lower())
            if letters in _CHANNEL_SPELLINGS:
                return _CHANNEL_SPELLINGS[letters]
            raise ValueError("must be SMS or voice (also accepted: CALL, Voice call)")
        return value

    @field_validator("otp_code", mode="before")
    @classmethod
    def _code_as_sent(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise ValueError("must be a string of digits: a number would lose the code's leading zeros")
        return value

    @field_validator("phone_number")
    @classmethod
    def _to_e164(cls, value: str, info: ValidationInfo) -> str:
        default_country = (info.context or {}).get("default_country")
        return phone.to_e164(value, default_country)

    @field_validator("otp_expires")
    @classmethod
    def _assume_utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class TelephonyData(OktaModel):
    context: Annotated[RequestContext | None, BeforeValidator(_object_or_none)] = Field(
        None, description="What triggered the code."
    )
    user_profile: Annotated[UserProfile | None, BeforeValidator(_object_or_none)] = Field(
        None, description="Who the code is for."
    )
    message_profile: MessageProfile = Field(description="What to send, where, and how.")


class TelephonyHookRequest(OktaModel):
    """The body Okta POSTs for every SMS or voice one-time code."""

    event_id: LenientText = Field(None, description="Unique id of this hook call.", examples=["uS5871kJThSsU8qlA1LTcg"])
    event_time: LenientText = Field(None, description="When Okta sent the call.", examples=["2022-01-28T21:43:40.000Z"])
    event_type: Literal["com.okta.telephony.provider"] | None = Field(
        None,
        description="Always the telephony hook's type; another hook's call is refused.",
        examples=[TELEPHONY_EVENT_TYPE],
    )
    event_type_version: LenientText = Field(None, description="Version of the event type.", examples=["1.0"])
    content_type: LenientText = Field(None, description="Content type of `data`.", examples=["application/json"])
    cloud_event_version: LenientText = Field(None, description="CloudEvents version.", examples=["0.1"])
    source: LenientText = Field(
        None,
        description="The inline hook's URL in the Okta API.",
        examples=["https://acme.okta.com/api/v1/inlineHooks/calz6lVQA77AwFeEe0g3"],
    )
    request_type: str | None = Field(
        None,
        description="Why Okta sends a code. Unknown values are accepted (Okta may add some) and logged.",
        examples=sorted(KNOWN_REQUEST_TYPES),
    )
    data: TelephonyData = Field(description="The request's payload.")

    @property
    def is_preview(self) -> bool:
        """True for requests from the Preview tab of Okta's admin console."""
        request = self.data.context.request if self.data.context else None
        url = request.url.value if request and request.url else None
        return bool(url and url.endswith("/generatePreview"))


def parse_hook_request(body: bytes, default_country: str | None) -> TelephonyHookRequest:
    """Validate Okta's JSON body; raises pydantic.ValidationError naming each bad field."""
    return TelephonyHookRequest.model_validate_json(body, context={"default_country": default_country})


# --------------------------------------------------------------------------------------- answers


class TelephonyActionResult(OktaModel):
    status: Literal["SUCCESSFUL", "PENDING", "FAILED"] = Field(
        description="Only SUCCESSFUL stops Okta from also sending the code through its own provider."
    )
    provider: str = Field(description="Who delivered the code (OKTA_PROVIDER_NAME).", examples=["TWILIO"])
    transaction_id: str = Field(
        description="The provider's id: a Twilio SID.", examples=["SM49a8ece2822d44e4adaccd7ed268f954"]
    )
    transaction_metadata: str | None = Field(
        None,
        description="A short note for the admin: channel, API, status, time.",
        examples=["sms message queued in 212 ms"],
    )


class TelephonyCommand(OktaModel):
    type: Literal["com.okta.telephony.action"] = Field(TELEPHONY_ACTION, description="The only command type.")
    value: list[TelephonyActionResult] = Field(description="One result: the delivery of this code.")


class TelephonyHookResponse(OktaModel):
    """Success: Okta counts the code as delivered."""

    commands: list[TelephonyCommand] = Field(description="One telephony action command.")


class OktaErrorModel(OktaModel):
    """Error answers: built on first use, so a cold start that succeeds never pays for them."""

    model_config = ConfigDict(defer_build=True)


class ErrorCause(OktaErrorModel):
    error_summary: str = Field(
        description="What went wrong, for the admin.", examples=["Provider could not deliver OTP"]
    )
    reason: str = Field(description="A stable code for it.", examples=["TWILIO_21211", "OTP_EXPIRED"])
    location: str = Field(
        description="The request field at fault, or where to read more.",
        examples=["data.messageProfile.phoneNumber", "https://www.twilio.com/docs/errors/21211"],
    )


class HookError(OktaErrorModel):
    error_summary: str = Field(description="Shown to admins and end users: no internals, no secrets.")
    error_causes: list[ErrorCause] = Field(default_factory=list, description="The details, one per cause.")


class ErrorResponse(OktaErrorModel):
    """Failure: Okta marks the hook failed and sends the code through its own provider."""

    error: HookError = Field(description="Why the code was not delivered.")


# ------------------------------------------------------------------------ event hook (/okta/events)
# Okta's event hook delivery: {"data": {"events": [LogEvent...]}}, each a System Log event.


class OktaEventModel(OktaModel):
    """Event hook models: built on first use, so the telephony hook's cold start never pays for them."""

    model_config = ConfigDict(defer_build=True)


class EventActor(OktaEventModel):
    id: str | None = Field(None, description="Who acted: for a user's own MFA, the user's id.", examples=["00u1a"])
    type: str | None = Field(None, description="The actor's kind.", examples=["User", "PublicClientApp"])


class EventTarget(OktaEventModel):
    id: str | None = Field(None, description="The target's id.", examples=["00u1a", "sms1a"])
    type: str | None = Field(None, description="The target's kind.", examples=["User", "AuthenticatorEnrollment"])
    detail_entry: dict[str, Any] | None = Field(
        None,
        description="Details of an authenticator enrollment; methodTypeUsed names the channel.",
        examples=[{"methodTypeUsed": "SMS"}],
    )


class EventOutcome(OktaEventModel):
    result: str | None = Field(None, description="The event's result.", examples=["SUCCESS", "FAILURE"])


class EventDebugContext(OktaEventModel):
    debug_data: dict[str, Any] | None = Field(
        None,
        description="Free-form details; for user.authentication.auth_via_mfa, `factor` and `factorIntent`.",
        examples=[{"factor": "SMS_FACTOR", "factorIntent": "LOGIN"}],
    )


class LogEvent(OktaEventModel):
    """One System Log event, as the event hook delivers it. Personal data: never logged whole."""

    uuid: str | None = Field(None, description="The event's id; a retried delivery repeats it.")
    published: str | None = Field(
        None, description="When it happened (ISO 8601, UTC).", examples=["2026-11-28T22:14:00.512Z"]
    )
    event_type: str | None = Field(None, description="What happened.", examples=["user.authentication.auth_via_mfa"])
    outcome: EventOutcome | None = Field(None, description="How it ended.")
    actor: EventActor | None = Field(None, description="Who acted.")
    target: list[EventTarget] | None = Field(None, description="What it acted on.")
    debug_context: EventDebugContext | None = Field(None, description="Event-specific details.")


class EventHookData(OktaEventModel):
    events: list[LogEvent] = Field(default_factory=list, description="The batch of events Okta delivers at once.")


class EventHookRequest(OktaEventModel):
    """Okta's event hook POST."""

    event_type: str | None = Field(None, description="The delivery's type.", examples=["com.okta.event_hook"])
    data: EventHookData = Field(description="The delivered events.")


class EventBatch(OktaEventModel):
    """The delivery's shape only, events unread: how the route reads a POST before it reads the
    events it will handle (EventHookRequest documents the whole)."""

    events: list[Any] = Field(default_factory=list)


class EventDelivery(OktaEventModel):
    data: EventBatch


class EventHookVerification(OktaEventModel):
    """The answer to Okta's one-time verification GET of a new event hook."""

    verification: str = Field(
        description="The X-Okta-Verification-Challenge header's value, echoed.", examples=["vcZlg-Xt7Qj4sLqGk7wN"]
    )


class EventHookAccepted(OktaEventModel):
    """The answer to an event delivery: an empty object; Okta reads only the 200."""
