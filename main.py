"""Okta telephony inline hook: Okta's SMS and voice one-time codes, delivered through Twilio.

For every code Okta POSTs a JSON request and waits up to 3 s. We authenticate the call, parse it,
check the code may be sent, hand it to Twilio, and answer SUCCESSFUL with Twilio's SID, or with
Okta's error object, which makes Okta fall back to its own provider (telephony/hook.py). The same
function takes Twilio's delivery receipts (telephony/receipts.py) and Okta's event hook, which
reports the codes users typed in (telephony/events.py); telephony/app.py routes each request.
"""

from __future__ import annotations

from telephony.startup import paused_collector

with paused_collector():  # everything built here lives as long as the process
    import flask
    import functions_framework

    from telephony.app import App
    from telephony.intake import on_our_terms
    from telephony.logs import configure_logging
    from telephony.settings import load_settings

    # Built once per instance and reused by every request it serves.
    settings = load_settings()
    configure_logging(settings.secret_values())
    app = App(settings)
    app.report_startup()
    if flask.has_app_context():  # loaded by functions-framework: it and its server serve on our terms
        flask.current_app.wsgi_app = on_our_terms(flask.current_app.wsgi_app)  # type: ignore[method-assign,assignment]


@functions_framework.http
def telephony_hook(request: flask.Request) -> flask.Response:
    """The function's entry point: Okta's telephony hook, Twilio's receipts and Okta's event hook."""
    return app(request)
