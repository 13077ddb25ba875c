"""The voice script: the phrase in the user's language, the digits one by one, twice."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from telephony.settings import SettingsError
from telephony.voice import VOICE_LOCALES, VoiceScript, spaced_digits

EXPECTED = {  # locale as Okta may send it -> (Say language, a word of the phrase)
    "EN-US": ("en-US", "verification code"),
    "en": ("en-US", "verification code"),
    "en_GB": ("en-GB", "verification code"),
    "es": ("es-ES", "código de verificación"),
    "es-MX": ("es-MX", "código de verificación"),
    "fr": ("fr-FR", "code de vérification"),
    "FR-ca": ("fr-CA", "code de vérification"),
    "de-DE": ("de-DE", "Bestätigungscode"),
    "it": ("it-IT", "codice di verifica"),
    "pt-BR": ("pt-BR", "código de verificação"),
    "pt_PT": ("pt-PT", "código de verificação"),
    "nl": ("nl-NL", "verificatiecode"),
    "ja": ("ja-JP", "確認コード"),
    "zh-CN": ("cmn-CN", "验证码"),
    "ko-KR": ("ko-KR", "인증 코드"),
}


def says(twiml: str) -> list[ET.Element]:
    root = ET.fromstring(twiml)
    assert root.tag == "Response"
    return root.findall("Say")


def test_digits_are_spaced_so_they_are_read_one_by_one() -> None:
    assert spaced_digits("482913") == "4, 8, 2, 9, 1, 3"


def test_the_code_is_said_twice_with_a_pause_between() -> None:
    root = ET.fromstring(VoiceScript({}).twiml("482913", "en-US"))
    assert [child.tag for child in root] == ["Pause", "Say", "Pause", "Say"]
    assert root[1].text == root[3].text == "Your verification code is 4, 8, 2, 9, 1, 3."


@pytest.mark.parametrize("locale", sorted(EXPECTED))
def test_each_locale_speaks_its_language(locale: str) -> None:
    language, words = EXPECTED[locale]
    for say in says(VoiceScript({}).twiml("482913", locale)):
        assert say.get("language") == language
        assert words in (say.text or "")
        assert "4, 8, 2, 9, 1, 3" in (say.text or "")
        assert (say.get("voice") or "").startswith("Polly.")


def test_every_language_has_its_own_voice() -> None:
    voices = {entry.voice for entry in VOICE_LOCALES.values()}
    assert len(voices) == len(VOICE_LOCALES)


@pytest.mark.parametrize("locale", [None, "", "sv-SE", "xx", "klingon"])
def test_unknown_locales_fall_back_to_english(locale: str | None) -> None:
    for say in says(VoiceScript({}).twiml("1234", locale)):
        assert say.get("language") == "en-US"
        assert say.text == "Your verification code is 1, 2, 3, 4."


def test_an_admin_overrides_a_phrase_per_locale() -> None:
    script = VoiceScript({"es": "Hola. Su clave es {code}.", "en-gb": "Cheerio, your code is {code}."})
    assert says(script.twiml("1234", "es-ES"))[0].text == "Hola. Su clave es 1, 2, 3, 4."
    assert says(script.twiml("1234", "es-MX"))[0].text != "Hola. Su clave es 1, 2, 3, 4."  # region has its own entry
    assert says(script.twiml("1234", "en_GB"))[0].text == "Cheerio, your code is 1, 2, 3, 4."
    assert says(script.twiml("1234", "en-US"))[0].text == "Your verification code is 1, 2, 3, 4."


def test_an_override_for_a_new_region_keeps_the_languages_voice() -> None:
    say = says(VoiceScript({"es-AR": "Su código es {code}."}).twiml("12", "es_ar"))[0]
    assert (say.get("language"), say.text) == ("es-ES", "Su código es 1, 2.")


def test_an_override_without_the_placeholder_is_a_configuration_error() -> None:
    with pytest.raises(SettingsError, match="must contain"):
        VoiceScript({"fr": "Votre code"})


def test_an_override_for_a_language_without_a_voice_is_a_configuration_error() -> None:
    with pytest.raises(SettingsError, match="no voice speaks"):
        VoiceScript({"sv": "Din kod är {code}"})


def test_voice_name_replaces_every_voice() -> None:
    for say in says(VoiceScript({}, voice_name="Google.en-US-Neural2-F").twiml("12", "fr")):
        assert say.get("voice") == "Google.en-US-Neural2-F"


def test_phrases_are_xml_escaped_by_the_library() -> None:
    twiml = VoiceScript({"en": "<b>Code</b> & more: {code}"}).twiml("12", "en")
    assert says(twiml)[0].text == "<b>Code</b> & more: 1, 2"
    assert "&lt;b&gt;" in twiml


@pytest.mark.parametrize("oddity", ["\x00", "\x1b", "\x08", "\ufffe", "\x7f\x0b\x0c"])
def test_characters_xml_forbids_never_reach_the_twiml(oddity: str) -> None:
    """Okta's template is the caller's text: a control character would make the TwiML no XML at all, and
    Twilio would fail the call once it reads it, long after the hook answered SUCCESSFUL."""
    template = f"Your code is 482913.{oddity}Bye"
    twiml = VoiceScript({}).twiml("482913", "en", template)
    assert [element.text for element in says(twiml)] == ["Your code is 4, 8, 2, 9, 1, 3. Bye"] * 2
