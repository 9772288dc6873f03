"""The Apache Kafka broker's jars, fetched from Maven Central into a cache outside the repo.

``ops/kafka/pom.xml`` names the artifacts; ``mvn dependency:copy-dependencies`` copies them
into ``<cache_dir>/kafka-<version>/libs``, which every clone and run then reuses, with a
class-data-sharing archive of the JVM; ``formatted-storage`` next to it is a template.

Examples
--------
>>> kafka_version().startswith("4.")
True
>>> _kafka_uuid() != _kafka_uuid()
True
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

from streams.errors import RiskstreamError
from streams.settings import Settings, get_settings

OPS_DIR = Path(__file__).resolve().parents[2] / "ops" / "kafka"
POM = OPS_DIR / "pom.xml"
_COMPLETE = ".complete"


def kafka_version(pom: Path = POM) -> str:
    """The Kafka version pinned in ``ops/kafka/pom.xml`` (property ``kafka.version``)."""
    try:
        root = ElementTree.parse(pom).getroot()  # noqa: S314 - our own file
    except (OSError, ElementTree.ParseError) as exc:
        raise RiskstreamError(f"cannot read the Kafka pom {pom}: {exc}") from exc
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] == "kafka.version" and element.text:
            return element.text.strip()
    raise RiskstreamError(f"{pom} has no <kafka.version> property")


def kafka_home(settings: Settings | None = None, pom: Path = POM) -> Path:
    """``<cache_dir>/kafka-<version>``: jars, formatted-storage template, class-data archive."""
    return (settings or get_settings()).cache_dir / f"kafka-{kafka_version(pom)}"


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise RiskstreamError(
            f"`{tool}` is not installed; install {package} (e.g. `apt-get install {package}`)"
            " or run `make bootstrap`"
        )
    return path


def java_executable() -> str:
    """Path of ``java`` (JDK/JRE 17+), or a one-line error saying what to install."""
    return _need("java", "openjdk-17-jre-headless")


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    # Several test runs may fetch or format at the same moment; one does it, the others wait.
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fetch_kafka_jars(settings: Settings | None = None, *, pom: Path = POM) -> Path:
    """The folder of broker jars, fetched with Maven unless the cache already has them.

    The cache is complete when its stamp file holds the SHA-256 of the pom that filled it;
    editing the pom refetches. Returns ``<cache_dir>/kafka-<version>/libs``.
    """
    home = kafka_home(settings, pom)
    libs = home / "libs"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()

    def complete() -> bool:
        stamp = libs / _COMPLETE
        return stamp.is_file() and stamp.read_text().strip() == digest

    if complete():
        return libs
    mvn = _need("mvn", "maven")
    with _file_lock(home / "fetch.lock"):
        if complete():
            return libs
        staging = home / f"libs.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        argv = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies"]
        argv += [f"-DoutputDirectory={staging}", "-DincludeScope=runtime"]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
        if result.returncode != 0 or not any(staging.glob("kafka_*.jar")):
            shutil.rmtree(staging, ignore_errors=True)
            errors = [ln for ln in (result.stdout + result.stderr).splitlines() if "ERROR" in ln]
            why = errors[0].strip() if errors else f"exit code {result.returncode}"
            raise RiskstreamError(f"Maven could not fetch the Kafka jars from {pom}: {why}")
        (staging / _COMPLETE).write_text(digest + "\n")
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
    return libs


def _kafka_uuid() -> str:
    """A random id in Kafka's format (URL-safe base64 of 16 bytes, no padding)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):  # Kafka avoids ids that look like command-line flags
            return text


def class_path(libs: Path) -> str:
    # Explicit and sorted: the class-data archive is only valid for the same class path.
    return os.pathsep.join(str(p) for p in sorted(libs.glob("*.jar")))


def cds_archive(libs: Path, java: str) -> Path:
    """Where the class-data-sharing archive for this JDK and these jars lives.

    It sits in ``libs`` so a refetch (new jars) drops it with the jars it was made from.
    """
    real = os.path.realpath(java)
    stat = os.stat(real)
    tag = hashlib.sha256(f"{real}:{stat.st_mtime_ns}:{stat.st_size}".encode()).hexdigest()
    return libs / f"classes-{tag[:12]}.jsa"


def formatted_storage(home: Path, java: str, libs: Path) -> Path:
    """A log folder formatted once by Kafka's own ``StorageTool`` (cached in ``home``).

    New brokers copy it and get fresh cluster and directory ids (:func:`copy_formatted`),
    which is what a format would give them, without paying a JVM start each time.
    """
    template = home / "formatted-storage"
    if (template / "meta.properties").is_file():
        return template
    with _file_lock(home / "format.lock"):
        if (template / "meta.properties").is_file():
            return template
        work = home / f"format-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        logs = work / "logs"
        config = work / "format.properties"
        work.mkdir(parents=True)
        config.write_text(
            "node.id=1\nprocess.roles=broker,controller\ncontroller.listener.names=CONTROLLER\n"
            "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093\n"
            f"controller.quorum.voters=1@127.0.0.1:9093\nlog.dirs={logs}\n"
        )
        argv = [java, "-Xmx256m", "-cp", class_path(libs), "kafka.tools.StorageTool", "format"]
        argv += ["-t", _kafka_uuid(), "-c", str(config)]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
        if result.returncode != 0 or not (logs / "meta.properties").is_file():
            shutil.rmtree(work, ignore_errors=True)
            lines = (result.stderr or result.stdout).strip().splitlines()
            why = lines[-1] if lines else f"exit code {result.returncode}"
            raise RiskstreamError(f"Kafka storage format failed: {why}")
        logs.rename(template)
        shutil.rmtree(work, ignore_errors=True)
    return template


def copy_formatted(template: Path, log_dir: Path) -> None:
    """Make ``log_dir`` a freshly formatted single-node KRaft log folder."""
    shutil.copytree(template, log_dir)
    meta = log_dir / "meta.properties"
    fresh = {"cluster.id": _kafka_uuid(), "directory.id": _kafka_uuid()}
    lines = []
    for line in meta.read_text().splitlines():
        key = line.split("=", 1)[0]
        lines.append(f"{key}={fresh[key]}" if key in fresh else line)
    meta.write_text("\n".join(lines) + "\n")
