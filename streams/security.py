"""Client security: the configured protocol as kafka-python and aiokafka options.

One place turns the settings' ``security_protocol``, SASL and TLS fields
into what the Kafka clients take, so the admin client, the producers, the
tails and Faust (`streams.app`) log in the same way.
"""

from __future__ import annotations

import ssl

from streams.settings import Settings


def kafka_security(settings: Settings) -> dict[str, object]:
    """kafka-python keyword arguments for the configured security protocol."""
    config: dict[str, object] = {"security_protocol": settings.security_protocol}
    if settings.security_protocol.startswith("SASL"):
        config.update(
            sasl_mechanism=settings.sasl_mechanism,
            sasl_plain_username=settings.sasl_username,
            sasl_plain_password=settings.sasl_password,
        )
    context = ssl_context(settings)
    if context is not None:
        config["ssl_context"] = context
    return config


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """TLS context for SSL / SASL_SSL, trusting ``ssl_ca_file`` (system CAs if unset)."""
    if settings.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(cafile=settings.ssl_ca_file or None)
    if settings.ssl_cert_file:
        context.load_cert_chain(settings.ssl_cert_file, settings.ssl_key_file or None)
    return context
