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
"""

from __future__ import annotations

from pathlib import Path
from string import Template
from xml.sax.saxutils import escape

from streams.errors import RiskstreamError
from streams.services.kafka_jars import OPS_DIR

SERVER_TEMPLATE = OPS_DIR / "server.properties"


def server_properties(
    *, host: str, port: int, controller_port: int, log_dir: Path, partitions: int
) -> str:
    """``server.properties`` for a single-node KRaft broker with these addresses."""
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
