"""The broker's configuration files: ``server.properties`` and the log4j2 configuration.

``server.properties`` is rendered from the template ``ops/kafka/server.properties``
(``string.Template`` placeholders); the log4j2 file sends the broker log to a size-capped
``server.log`` in the broker's data folder.

Examples
--------
>>> text = server_properties(
...     host="127.0.0.1", port=9092, controller_port=9093, log_dir=Path("/d"), partitions=4
... )
>>> "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093" in text
True
>>> "controller.quorum.voters=1@127.0.0.1:9093" in text, "log.dirs=/d" in text
(True, True)
>>> 'fileName="/tmp/a&amp;b/server.log"' in log4j_config(Path("/tmp/a&b/server.log"))
True

With ``sasl_users`` the client listener asks for SASL/PLAIN with those accounts:

>>> sasl = server_properties(host="h", port=1, controller_port=2, log_dir=Path("/d"),
...                          partitions=1, sasl_users={"alice": 'p"w'})
>>> "listeners=SASL_PLAINTEXT://h:1,CONTROLLER://h:2" in sasl, "user_alice=" in sasl
(True, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from string import Template
from xml.sax.saxutils import escape

from streams.errors import RiskstreamError
from streams.services.kafka_jars import OPS_DIR

SERVER_TEMPLATE = OPS_DIR / "server.properties"


def server_properties(
    *,
    host: str,
    port: int,
    controller_port: int,
    log_dir: Path,
    partitions: int,
    sasl_users: Mapping[str, str] | None = None,
) -> str:
    """``server.properties`` for a single-node KRaft broker with these addresses.

    ``sasl_users`` (user name -> password, the broker's own inter-broker account first)
    turns the client listener into SASL_PLAINTEXT with the PLAIN mechanism; the accounts
    go into the listener's JAAS configuration.
    """
    try:
        template = Template(SERVER_TEMPLATE.read_text())
    except OSError as exc:
        raise RiskstreamError(f"cannot read the broker template {SERVER_TEMPLATE}") from exc
    return template.substitute(
        host=host,
        port=port,
        controller_port=controller_port,
        log_dirs=log_dir,
        partitions=partitions,
        client_protocol="SASL_PLAINTEXT" if sasl_users else "PLAINTEXT",
        security=sasl_block(sasl_users) if sasl_users else "",
    )


def _jaas_quote(value: str) -> str:
    """A JAAS string literal, escaped again for the properties file (which eats backslashes).

    >>> print(_jaas_quote('p"w'))
    "p\\\\"w"
    """
    if any(ord(c) < 32 for c in value):
        raise RiskstreamError("SASL user names and passwords cannot hold control characters")
    jaas = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return jaas.replace("\\", "\\\\")


def sasl_block(users: Mapping[str, str]) -> str:
    """The SASL/PLAIN settings of the client listener; the first user is the broker's own.

    >>> block = sasl_block({"broker": "b", "alice": "a"})
    >>> block.splitlines()[1]
    'sasl.enabled.mechanisms=PLAIN'
    >>> block.endswith('username="broker" password="b" user_broker="b" user_alice="a";')
    True
    """
    if not users:
        raise ValueError("SASL needs at least one user")
    (own, own_password), *_ = users.items()
    accounts = " ".join(f"user_{name}={_jaas_quote(pw)}" for name, pw in users.items())
    jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f"username={_jaas_quote(own)} password={_jaas_quote(own_password)} {accounts};"
    )
    return "\n".join(
        [
            "# SASL/PLAIN on the client listener (accounts in its JAAS configuration).",
            "sasl.enabled.mechanisms=PLAIN",
            "sasl.mechanism.inter.broker.protocol=PLAIN",
            f"listener.name.sasl_plaintext.plain.sasl.jaas.config={jaas}",
        ]
    )


def log4j_config(log_file: Path) -> str:
    """log4j2 configuration: INFO to a size-capped rolling ``server.log``."""
    path = escape(str(log_file), {'"': "&quot;"})
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <RollingFile name="server" fileName="{path}" filePattern="{path}.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <Policies><SizeBasedTriggeringPolicy size="10 MB"/></Policies>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Root level="INFO"><AppenderRef ref="server"/></Root>
  </Loggers>
</Configuration>
"""
