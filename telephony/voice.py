"""What a voice call says: the phrase in the user's language, then the code digit by digit, twice.

Which phrase, first that applies: the admin's VOICE_PHRASES for the locale; Okta's msgTemplate (its
org's voice template) when it holds the code as a whole number; the built-in table below. Voices are
Amazon Polly voices through Twilio's <Say>.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NamedTuple

from telephony.locales import read_locale
from telephony.settings import CODE_PLACEHOLDER, SettingsError
from telephony.templates import code_position, holds_code

TWIML_MAX_CHARS = 4000  # Twilio's limit for the Calls Twiml parameter
# Control characters (XML 1.0 forbids most, and none is spoken) and U+FFFE/U+FFFF: a run becomes a space.
_UNSPEAKABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffe\uffff]+")


class VoiceLocale(NamedTuple):
    language: str  # <Say language="...">
    voice: str  # <Say voice="...">, one that speaks `language`
    phrase: str  # contains {code}, where the spaced digits go


# Keys are BCP 47 tags as telephony.locales spells them: a language alone, or language-REGION where a region differs.
VOICE_LOCALES: dict[str, VoiceLocale] = {
    "en": VoiceLocale("en-US", "Polly.Joanna", "Your verification code is {code}."),
    "en-GB": VoiceLocale("en-GB", "Polly.Amy", "Your verification code is {code}."),
    "en-AU": VoiceLocale("en-AU", "Polly.Nicole", "Your verification code is {code}."),
    "es": VoiceLocale("es-ES", "Polly.Lucia", "Su código de verificación es {code}."),
    "es-US": VoiceLocale("es-US", "Polly.Lupe", "Su código de verificación es {code}."),
    "es-MX": VoiceLocale("es-MX", "Polly.Mia", "Su código de verificación es {code}."),
    "fr": VoiceLocale("fr-FR", "Polly.Lea", "Votre code de vérification est {code}."),
    "fr-CA": VoiceLocale("fr-CA", "Polly.Chantal", "Votre code de vérification est {code}."),
    "de": VoiceLocale("de-DE", "Polly.Vicki", "Ihr Bestätigungscode lautet {code}."),
    "it": VoiceLocale("it-IT", "Polly.Bianca", "Il suo codice di verifica è {code}."),
    "pt": VoiceLocale("pt-BR", "Polly.Camila", "Seu código de verificação é {code}."),
    "pt-PT": VoiceLocale("pt-PT", "Polly.Ines", "O seu código de verificação é {code}."),
    "nl": VoiceLocale("nl-NL", "Polly.Lotte", "Uw verificatiecode is {code}."),
    "ja": VoiceLocale("ja-JP", "Polly.Mizuki", "あなたの確認コードは {code} です。"),
    "zh": VoiceLocale("cmn-CN", "Polly.Zhiyu", "您的验证码是 {code}。"),
    "ko": VoiceLocale("ko-KR", "Polly.Seoyeon", "인증 코드는 {code} 입니다."),
}
FALLBACK_LOCALE = "en"


def _keys(locale: str | None) -> tuple[str, ...]:
    """The table keys for Okta's locale, the most specific first."""
    read = read_locale(locale)
    return read.candidates() if read else ()


def _lookup(table: Mapping[str, VoiceLocale], locale: str | None) -> VoiceLocale | None:
    return next((table[key] for key in _keys(locale) if key in table), None)


def spaced_digits(otp_code: str) -> str:
    """'482913' -> '4, 8, 2, 9, 1, 3': <Say> reads each digit, with a short pause between."""
    return ", ".join(otp_code)


class VoiceScript:
    """The locale table with the admin's overrides applied, built once at start-up."""

    def __init__(self, phrases: Mapping[str, str], voice_name: str | None = None) -> None:
        table = dict(VOICE_LOCALES)
        self._overridden: set[str] = set()  # the admin's phrases outrank Okta's template
        for locale, phrase in phrases.items():
            base = _lookup(VOICE_LOCALES, locale)
            if base is None:
                known = ", ".join(sorted(VOICE_LOCALES))
                raise SettingsError(
                    f"Invalid configuration: VOICE_PHRASES: no voice speaks {locale!r} (known: {known})"
                )
            if CODE_PLACEHOLDER not in phrase:
                raise SettingsError(f"Invalid configuration: VOICE_PHRASES[{locale!r}] must contain {CODE_PLACEHOLDER}")
            key = _keys(locale)[0]
            table[key] = base._replace(phrase=phrase)
            self._overridden.add(key)
        if voice_name:
            table = {key: entry._replace(voice=voice_name) for key, entry in table.items()}
        self._table = table

    def locale_for(self, locale: str | None) -> VoiceLocale:
        """The entry for Okta's locale: exact region, else the language, else English."""
        return _lookup(self._table, locale) or self._table[FALLBACK_LOCALE]

    def _admin_phrase(self, locale: str | None) -> bool:
        return bool(self._overridden) and any(key in self._overridden for key in _keys(locale))

    def twiml(self, otp_code: str, locale: str | None, okta_template: str | None = None) -> str:
        """A short call: a breath for the phone to reach the ear, the phrase, a pause, the phrase again."""
        entry = self.locale_for(locale)
        if okta_template and holds_code(okta_template, otp_code) and not self._admin_phrase(locale):
            start, end = code_position(okta_template, otp_code)
            text = okta_template[:start] + spaced_digits(otp_code) + okta_template[end:]
            spoken = self._say_twice(text, entry)
            if len(spoken) <= TWIML_MAX_CHARS:
                return spoken
        return self._say_twice(entry.phrase.replace(CODE_PLACEHOLDER, spaced_digits(otp_code)), entry)

    @staticmethod
    def _say_twice(text: str, entry: VoiceLocale) -> str:
        from twilio.twiml.voice_response import VoiceResponse  # only voice calls need TwiML

        text = _UNSPEAKABLE.sub(" ", text)  # Okta's template is the caller's text: TwiML must stay XML
        response = VoiceResponse()
        response.pause(length=1)
        response.say(text, voice=entry.voice, language=entry.language)
        response.pause(length=1)
        response.say(text, voice=entry.voice, language=entry.language)
        return str(response.to_xml(xml_declaration=False))
