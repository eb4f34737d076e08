"""Header and query checks of the request pipeline (api.endpoints), one function per rule.

They read only the current request, so they live apart from the pipeline that orders them.
"""

from __future__ import annotations

import re

from runtime.errors import ProtocolError

from .manifest import CONTROL_PLANE_HEADER, CONTROL_PLANE_VERSION, WORKER_PROTOCOL_HEADER
from .request_view import RequestView

_WORKER_VERSION = re.compile(r"^1(\.\d+)?$")


def single_valued_query(request: RequestView) -> None:
    """Every query parameter of this API takes one value; ``a=1&a=2`` would be read as
    ``a=1`` while a signature over the sorted pairs also holds for ``a=2&a=1``."""
    for name, values in request.args.lists():
        if len(values) > 1:
            raise ProtocolError(
                400, "duplicate_query_parameter",
                f"The query parameter {name!r} is given {len(values)} times; send it once.",
                parameter=name,
            )


def control_version(request: RequestView) -> None:
    """The control-plane version header is required and must be the one version served."""
    value = request.headers.get(CONTROL_PLANE_HEADER)
    value = value.strip() if value is not None else None
    if not value:
        raise ProtocolError(
            400,
            "missing_control_plane_version",
            "Missing control-plane version header.",
            supported_version=CONTROL_PLANE_VERSION,
            requested_version=None,
            remediation=f"Send the {CONTROL_PLANE_HEADER}: {CONTROL_PLANE_VERSION} header on control-plane requests.",
        )
    if value != CONTROL_PLANE_VERSION:
        raise ProtocolError(
            400,
            "unsupported_control_plane_version",
            "Unsupported control-plane version.",
            supported_version=CONTROL_PLANE_VERSION,
            requested_version=value,
            remediation=f"Send the {CONTROL_PLANE_HEADER}: {CONTROL_PLANE_VERSION} header; other versions are not served.",
        )

def worker_version(request: RequestView) -> None:
    """The worker protocol header is required; any 1.x is accepted."""
    value = (request.headers.get(WORKER_PROTOCOL_HEADER) or "").strip()
    if not value:
        raise ProtocolError(
            400,
            "missing_protocol_version",
            "Missing worker protocol version header.",
            supported_version="1.20",
            requested_version=None,
            remediation=f"Send {WORKER_PROTOCOL_HEADER}: 1.20 (any 1.x is accepted).",
        )
    if not _WORKER_VERSION.match(value):
        raise ProtocolError(
            400,
            "unsupported_protocol_version",
            f"Worker requested protocol version {value}; this server speaks 1.20.",
            supported_version="1.20",
            requested_version=value,
            remediation=f"Send {WORKER_PROTOCOL_HEADER}: 1.20 (any 1.x is accepted).",
        )
