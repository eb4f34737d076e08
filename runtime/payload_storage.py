"""External payload storage (extended spec §13): a namespace's policy, the drivers the server
can reach itself, and the probe an operator runs against them.

Payloads above a namespace's threshold travel as *references* that SDK-side drivers wrote
(``external_storage`` envelopes); the server stores them verbatim and checks their shape
(``actors.commands``). It reads the storage only to answer ``POST /api/storage/test`` and to
decode a reference where it must show a payload. Two drivers are built in: the local
filesystem (one node, or a shared mount) and S3-compatible object stores through boto3, the
AWS SDK, which handles signing, retries and credentials (environment, profile, instance
role) the way operators already configure it; it is blocking, so it runs in worker threads.
Objects are content-addressed as the SDK's drivers lay them out (``<codec>/<sha256[:2]>/<sha256>``
under the prefix), so either side can read what the other wrote.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

import trio

from persistence.ids import iso
from persistence.journal import Batch, ObjectRow
from persistence.vocabulary import CROCKFORD

from .engine import Engine
from .errors import ProtocolError

KIND = "external_storage"
DRIVERS = ("local", "s3", "gcs", "azure")
DIAGNOSABLE = ("local", "s3")  # the drivers this server can write to itself


class Driver(Protocol):
    def put(self, data: bytes, sha256: str, codec: str) -> str: ...

    def get(self, uri: str) -> bytes: ...

    def delete(self, uri: str) -> None: ...

    def put_named(self, name: str, data: bytes) -> None: ...

    def get_named(self, name: str) -> bytes | None: ...


def object_key(prefix: str, sha256: str, codec: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix + '/' if prefix else ''}{codec}/{sha256[:2]}/{sha256}"


class LocalDriver:
    """Files under a root directory (``config.uri``: a ``file://`` URI or a path)."""

    def __init__(self, root: str) -> None:
        parsed = urlparse(root)
        if parsed.scheme not in ("", "file") or (parsed.scheme == "file" and parsed.netloc not in ("", "localhost")):
            raise ValueError("the local driver's config.uri must be a file:// URI or a path on this node")
        self.root = Path(unquote(parsed.path) if parsed.scheme == "file" else root).resolve()

    def _path(self, uri: str) -> Path:
        parsed = urlparse(uri)
        path = Path(unquote(parsed.path)).resolve()
        if parsed.scheme != "file" or not path.is_relative_to(self.root):
            raise ValueError("the reference is not a file under this namespace's storage root")
        return path

    def put(self, data: bytes, sha256: str, codec: str) -> str:
        path = self.root / object_key("", sha256, codec)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
            tmp.write_bytes(data)
            os.replace(tmp, path)  # readers never see half a file
        return path.as_uri()

    def get(self, uri: str) -> bytes:
        return self._path(uri).read_bytes()

    def delete(self, uri: str) -> None:
        self._path(uri).unlink(missing_ok=True)

    def put_named(self, name: str, data: bytes) -> None:
        path = self.root / "runtime" / name
        if path.exists():
            return  # content-addressed: the same name is the same bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{name}.{secrets.token_hex(4)}")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def get_named(self, name: str) -> bytes | None:
        try:
            return (self.root / "runtime" / name).read_bytes()
        except FileNotFoundError:
            return None


class S3Driver:
    """An S3-compatible bucket (``config.bucket``, ``prefix``, ``region``, ``endpoint``)."""

    def __init__(self, config: dict[str, Any]) -> None:
        import boto3

        self.bucket = config.get("bucket") or ""
        if not self.bucket:
            raise ValueError("the s3 driver needs config.bucket")
        self.prefix = str(config.get("prefix") or "")
        session = boto3.session.Session(profile_name=config["auth_profile"]) if config.get("auth_profile") else boto3.session.Session()
        self.client = session.client("s3", region_name=config.get("region"), endpoint_url=config.get("endpoint"))

    def _key(self, uri: str) -> str:
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or parsed.netloc != self.bucket:
            raise ValueError("the reference is not an object of this namespace's bucket")
        return parsed.path.lstrip("/")

    def put(self, data: bytes, sha256: str, codec: str) -> str:
        key = object_key(self.prefix, sha256, codec)
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType="application/octet-stream",
                               Metadata={"sha256": sha256, "codec": codec})
        return f"s3://{self.bucket}/{key}"

    def get(self, uri: str) -> bytes:
        body = self.client.get_object(Bucket=self.bucket, Key=self._key(uri))["Body"]
        return bytes(body.read())

    def delete(self, uri: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(uri))

    def _named(self, name: str) -> str:
        prefix = self.prefix.strip("/")
        return f"{prefix + '/' if prefix else ''}runtime/{name}"

    def put_named(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._named(name), Body=data, ContentType="application/octet-stream")

    def get_named(self, name: str) -> bytes | None:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._named(name))["Body"]
        except self.client.exceptions.NoSuchKey:
            return None
        return bytes(body.read())


def driver_for(policy: dict[str, Any]) -> Driver:
    config = policy.get("config") or {}
    if policy["driver"] == "local":
        if not config.get("uri"):
            raise ValueError("the local driver needs config.uri (a file:// URI or a path)")
        return LocalDriver(str(config["uri"]))
    if policy["driver"] == "s3":
        return S3Driver(config)
    raise ValueError(f"the {policy['driver']} driver is used by SDK-side drivers only; this server cannot reach it")


class PayloadStorage:
    """Each namespace's policy (a journal object per namespace) and the operator's probe."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.policies: dict[str, dict[str, Any]] = {}
        self._drivers: dict[str, tuple[dict[str, Any], Driver]] = {}  # namespace -> (its policy, the driver built for it)

    async def load(self) -> None:
        self.policies = {row.namespace: dict(row.body) for row in await self.engine.journal.list_objects(KIND)}

    def policy(self, namespace: str) -> dict[str, Any] | None:
        return self.policies.get(namespace)

    async def set_policy(self, namespace: str, policy: dict[str, Any]) -> dict[str, Any]:
        now = self.engine.clock.now()
        await self.engine.journal.append(Batch(objects=[ObjectRow(namespace, KIND, namespace, policy, now)]))
        self.policies[namespace] = policy
        self._drivers.pop(namespace, None)
        return policy

    def forget_namespace(self, namespace: str) -> None:
        self.policies.pop(namespace, None)
        self._drivers.pop(namespace, None)

    async def driver(self, namespace: str, policy: dict[str, Any]) -> Driver:
        """The namespace's driver, built once per policy (an S3 client is costly to make, and
        making it blocks: it is made in a worker thread)."""
        cached = self._drivers.get(namespace)
        if cached is not None and cached[0] is policy:
            return cached[1]
        built = await trio.to_thread.run_sync(driver_for, policy)
        self._drivers[namespace] = (policy, built)
        return built

    async def probe(self, namespace: str, driver: str | None, small: int, large: int) -> dict[str, Any]:
        """Write, read back, compare and delete one payload of each size (extended §13.2)."""
        policy = self.policy(namespace)
        base = {"namespace": namespace, "driver": (policy or {}).get("driver") or driver}
        if policy is None:
            raise _failed("external_storage_not_configured",
                                f"Namespace [{namespace}] has no external storage policy; PUT one on /api/namespaces/{namespace}/external-storage.",
                                **base)
        if not policy.get("enabled", True):
            raise _failed("external_storage_disabled", f"External storage is disabled for namespace [{namespace}].", **base)
        if driver is not None and driver != policy["driver"]:
            raise ProtocolError(422, "validation_failed",
                                f"The driver field names [{driver}], but namespace [{namespace}] uses [{policy['driver']}].",
                                errors={"driver": ["The driver must be the namespace policy's."]},
                                validation_errors={"driver": ["The driver must be the namespace policy's."]})
        if policy["driver"] not in DIAGNOSABLE:
            raise _failed("storage_driver_unavailable",
                                f"The {policy['driver']} driver is used by SDK-side drivers only; this server can test "
                                f"{', '.join(DIAGNOSABLE)}.", **base, supported_diagnostic_drivers=list(DIAGNOSABLE))
        try:
            results = await trio.to_thread.run_sync(_round_trips, policy, (small, large))
        except Exception as exc:  # noqa: BLE001 - the storage's own error is the diagnosis the operator asked for
            raise _failed("storage_driver_unavailable",
                                f"The {policy['driver']} storage could not be written and read back: {type(exc).__name__}: {str(exc)[:300]}",
                                **base) from None
        return {"status": "passed", "namespace": namespace, "driver": policy["driver"], "tested_at": iso(self.engine.clock.now()),
                "small_payload": results[0], "large_payload": results[1]}


def _failed(reason: str, message: str, **extra: Any) -> ProtocolError:
    """A diagnostic failure: 422 with ``status: failed`` beside the reason (extended §13.2)."""
    error = ProtocolError(422, reason, message, **extra)
    error.extra["status"] = "failed"
    return error


def _round_trips(policy: dict[str, Any], sizes: tuple[int, ...]) -> list[dict[str, Any]]:
    driver = driver_for(policy)
    out = []
    for size in sizes:
        data = secrets.token_bytes(size)
        digest = hashlib.sha256(data).hexdigest()
        uri = driver.put(data, digest, "avro")
        back = driver.get(uri)
        driver.delete(uri)
        if back != data:
            raise ValueError(f"the {size}-byte payload read back differs from what was written")
        out.append({"status": "passed", "bytes": size, "sha256": digest, "reference_uri": uri})
    return out


# --- the runtime transport (extended §13.4): the server stores the bytes itself ---------------

TRANSPORT_SCHEMA = "durable-workflow.v2.runtime-external-payload-transport.v1"
REFERENCE_SCHEMA = "durable-workflow.v2.runtime-external-payload-reference.v1"
UPLOAD_SCHEMA = "durable-workflow.v2.runtime-external-payload-upload.v1"
UPLOAD_PATH = "/api/external-payloads/v1"
MAX_TRANSPORT_BYTES = 16 * 1024 * 1024
DEFAULT_THRESHOLD = 256 * 1024


def reference_id(sha256: str) -> str:
    """Content-addressed: the same bytes always get the same id (``ep_`` + 26 Crockford
    characters, the first 130 bits of the digest)."""
    bits = int(sha256, 16) >> (256 - 130)
    return "ep_" + "".join(CROCKFORD[(bits >> (5 * i)) & 31] for i in reversed(range(26)))


def transport_manifest(policy: dict[str, Any] | None, max_payload_bytes: int) -> dict[str, Any]:
    """The namespace's policy as cluster info publishes it, with the transport the SDK uses to
    hand payloads above the threshold to this server (``status`` says whether it can now).

    Every namespace gets one once the transport is advertised (the SDK then reads the manifest
    of the namespace it talks to): without a policy it is ``unavailable`` with the largest
    inline payload as its threshold, so clients send inline what they always could, and
    clients with a storage driver of their own keep sending direct references."""
    if policy is None:
        policy = {"enabled": False}
        threshold = max_payload_bytes
        available = False
    else:
        threshold = policy.get("threshold_bytes") or DEFAULT_THRESHOLD
        available = bool(policy.get("enabled", True)) and policy["driver"] in DIAGNOSABLE
    return {
        **policy,
        "threshold_bytes": threshold,
        "status": "available" if available else "unavailable",
        "direct_provider_adapters": {"capability_negotiated": True, "enabled": True},
        "transport": {
            "schema": TRANSPORT_SCHEMA, "version": 1, "reference_schema": REFERENCE_SCHEMA,
            "mode": "authenticated_namespace_runtime",
            "upload": {"method": "POST", "path": UPLOAD_PATH, "completion_context": {
                "schema": "durable-workflow.v2.payload-completion-context.v1", "header": "X-Durable-Workflow-Payload-Completion",
                "prepared_schema": "durable-workflow.v2.payload-completion-context.v2"}},
            "fetch": {"method": "GET", "path_template": UPLOAD_PATH + "/{referenceId}"},
            "limits": {"max_payload_bytes": MAX_TRANSPORT_BYTES, "request_timeout_seconds": 30},
            "direct_provider_adapters": {"capability_negotiated": True, "enabled": True},
        },
    }


def _payload_error(status: int, reason: str, message: str, ref: str | None, retryable: bool = False) -> ProtocolError:
    return ProtocolError(status, reason, message, reference_id=ref, retryable=retryable)


class RuntimeTransport:
    """Uploads and fetches of runtime payload references through the namespace's driver."""

    def __init__(self, storage: PayloadStorage) -> None:
        self.storage = storage

    async def _driver(self, namespace: str, ref: str | None) -> Driver:
        policy = self.storage.policy(namespace)
        if policy is None or not policy.get("enabled", True) or policy["driver"] not in DIAGNOSABLE:
            if ref is not None:
                raise _payload_error(404, "external_payload_not_found", f"Namespace [{namespace}] stores no payloads.", ref)
            raise _payload_error(422, "external_payload_unsupported",
                                 f"Namespace [{namespace}] has no enabled local or s3 storage policy for this server to write to.",
                                 ref)
        try:
            return await self.storage.driver(namespace, policy)
        except ValueError as exc:
            raise _payload_error(503, "external_payload_unavailable", str(exc), ref) from None

    async def upload(self, namespace: str, data: bytes, codec: str | None, size: str | None, sha256: str | None) -> dict[str, Any]:
        if codec != "avro":
            raise _payload_error(422, "external_payload_unsupported", "Only avro payloads are stored (X-Durable-Workflow-Payload-Codec).", None)
        if len(data) > MAX_TRANSPORT_BYTES:
            raise _payload_error(413, "external_payload_oversized", f"A payload is at most {MAX_TRANSPORT_BYTES} bytes.", None)
        digest = hashlib.sha256(data).hexdigest()
        if size != str(len(data)) or sha256 != digest:
            raise _payload_error(422, "external_payload_integrity_mismatch",
                                 "The body does not match its X-Durable-Workflow-Payload-Size and -SHA256 headers.", None)
        driver = await self._driver(namespace, None)
        ref = reference_id(digest)
        try:
            await trio.to_thread.run_sync(driver.put_named, ref, data)
        except Exception as exc:  # noqa: BLE001 - the storage's own failure, reported as retryable
            raise _payload_error(503, "external_payload_unavailable", f"The payload could not be stored: {type(exc).__name__}.",
                                 ref, retryable=True) from None
        return {"schema": UPLOAD_SCHEMA, "transport_version": 1,
                "reference": {"schema": REFERENCE_SCHEMA, "reference_id": ref, "codec": "avro", "size_bytes": len(data),
                              "sha256": digest}}

    async def fetch(self, namespace: str, ref: str) -> tuple[bytes, str]:
        driver = await self._driver(namespace, ref)
        try:
            data = await trio.to_thread.run_sync(driver.get_named, ref)
        except Exception as exc:  # noqa: BLE001 - the storage's own failure, reported as retryable
            raise _payload_error(503, "external_payload_unavailable", f"The payload could not be read: {type(exc).__name__}.",
                                 ref, retryable=True) from None
        if data is None:
            raise _payload_error(404, "external_payload_not_found", f"Payload [{ref}] is not stored in this namespace.", ref)
        return data, hashlib.sha256(data).hexdigest()
