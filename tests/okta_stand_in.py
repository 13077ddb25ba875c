"""The tests' name for the Okta Management API stand-in, which lives in tools/sandbox/ beside the Twilio
sandbox so that `make run` and the tests share one implementation."""

from tools.sandbox.okta_stand_in import OktaStandIn, OktaState, phone_factor

__all__ = ["OktaStandIn", "OktaState", "phone_factor"]
