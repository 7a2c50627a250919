"""Opening an association and reading answers, with every failure turned into one clear
``core.errors.NetworkError`` that names the node and says what happened and what to check.

pynetdicom reports a failed association only as flags (rejected / aborted / not established);
:func:`association` works out why: the A-ASSOCIATE-RJ reason (wrong AE title, unknown calling AE),
a TCP probe after a failed connection (refused, unknown host, no answer), or the time it took
(an ACSE timeout). :func:`lost` does the same for a request that got no answer.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role
from pynetdicom.association import Association
from pynetdicom.status import code_to_category

from core.errors import (
    AssociationAbortedError,
    AssociationRejectedError,
    NetworkError,
    NetworkTimeoutError,
    NodeUnreachableError,
    RemoteFailureError,
)
from core.net.node import NodeSettings
from core.net.sop import sop_name

__all__ = [
    "association",
    "make_ae",
    "require_context",
    "lost",
    "status_of",
    "failure_text",
    "check",
    "SUCCESS",
    "PENDING",
]

log = logging.getLogger(__name__)

SUCCESS = 0x0000
PENDING = (0xFF00, 0xFF01)
CANCEL = 0xFE00


def make_ae(aet: str, *, connect: float = 10.0, acse: float = 30.0, dimse: float = 60.0, network: float = 60.0) -> AE:
    """A pynetdicom ``AE`` named ``aet`` with our timeouts (seconds)."""
    ae = AE(ae_title=aet)
    ae.connection_timeout = connect
    ae.acse_timeout = acse
    ae.dimse_timeout = dimse
    ae.network_timeout = network
    ae.maximum_pdu_size = 0  # no limit on what we receive: fewer, larger PDUs for big OCT volumes
    return ae


def _probe(node: NodeSettings) -> str:
    """Why a TCP connection to the node fails ('' when it connects now)."""
    try:
        with socket.create_connection((node.host, node.port), timeout=node.connect_timeout):
            return ""
    except socket.gaierror:
        return f"unknown host {node.host!r} (not in DNS or the hosts file; check the name or use the address)"
    except ConnectionRefusedError:
        return (
            f"connection refused: nothing listens on port {node.port} of {node.host} "
            "(is the DICOM node running, and is the port right?)"
        )
    except TimeoutError:
        return (
            f"no answer from {node.host} port {node.port} within {node.connect_timeout:g} s "
            "(host down, wrong address, or a firewall in the way)"
        )
    except OSError as e:
        return f"cannot connect to {node.host} port {node.port} ({e.strerror or e})"


def _why_not(assoc: Association, node: NodeSettings, purpose: str, elapsed: float) -> NetworkError:
    """The error for an association that was not established."""
    if assoc.is_rejected:
        rsp = assoc.acceptor.primitive
        reason = getattr(rsp, "reason_str", "") or "no reason given"
        result = getattr(rsp, "result_str", "") or ""
        source = getattr(rsp, "source_str", "") or ""
        hint = "check the node's AE title, port, and that it knows our AE title"
        lowered = reason.lower()
        if "called ae" in lowered:
            hint = f"the node does not answer to the AE title {node.aet!r}; check the node's AE title"
        elif "calling ae" in lowered:
            hint = f"the node does not know our AE title {node.our_aet!r}; register it on the node"
        elif "no reason" in lowered or "temporary congestion" in lowered or "local limit" in lowered:
            hint = "the node is busy or refuses new associations now; try again later"
        return AssociationRejectedError(
            node, f"{purpose}: the node rejected the association ({reason}; {result}, {source}): {hint}"
        )
    rsp = assoc.acceptor.primitive
    if rsp is not None and getattr(rsp, "result", None) == 0x00:  # accepted, but no context
        wanted = ", ".join(sorted({sop_name(str(cx.abstract_syntax)) for cx in assoc.requestor.requested_contexts}))
        return AssociationRejectedError(
            node, f"{purpose}: the node accepted the association but none of the services we asked for ({wanted})"
        )
    why = _probe(node)
    if why:
        return NodeUnreachableError(node, f"{purpose}: {why}")
    tls = " (TLS is on: does the node speak TLS on this port, and do the certificates match?)" if node.tls else ""
    if elapsed >= 0.95 * node.acse_timeout:
        return NetworkTimeoutError(
            node,
            f"{purpose}: connected, but the node did not answer the association request within "
            f"{node.acse_timeout:g} s (is this port a DICOM service?){tls}",
        )
    return AssociationAbortedError(
        node, f"{purpose}: the node closed the connection during the association request{tls}"
    )


def _transient(err: NetworkError) -> bool:
    """Worth another attempt: unreachable, a transient rejection, or a node that closed the connection
    while the association was being set up (a node starting up or overloaded does that; with TLS
    it is a mismatch, which another attempt does not fix)."""
    closed = (
        isinstance(err, AssociationAbortedError)
        and "closed the connection during the association request" in str(err)
        and "TLS is on" not in str(err)
    )
    return (
        closed
        or isinstance(err, NodeUnreachableError)
        or (isinstance(err, AssociationRejectedError) and "Transient" in str(err))
    )


@contextmanager
def association(
    node: NodeSettings,
    contexts: Iterable[tuple[str, Sequence[str]]],
    *,
    purpose: str,
    scp_roles: Iterable[str] = (),
    handlers: Sequence[tuple] = (),
) -> Iterator[Association]:
    """An established association with ``node`` offering ``contexts`` ((SOP class, transfer syntaxes)
    pairs); ``scp_roles``: SOP classes we take the SCP role for (C-GET's storage sub-operations);
    ``handlers``: pynetdicom event handlers. Released at the end, aborted if the body raises.
    A failure raises a ``NetworkError`` subclass whose message starts with ``purpose``. Connection
    failures (and transient rejections) are retried ``node.retries`` times."""
    contexts = list(contexts)
    roles = [build_role(uid, scp_role=True) for uid in scp_roles]
    attempts = node.retries + 1
    for attempt in range(1, attempts + 1):
        ae = make_ae(
            node.our_aet,
            connect=node.connect_timeout,
            acse=node.acse_timeout,
            dimse=node.dimse_timeout,
            network=node.network_timeout,
        )
        for sop, syntaxes in contexts:
            ae.add_requested_context(sop, list(syntaxes))
        start = time.monotonic()
        try:
            assoc = ae.associate(
                node.host,
                node.port,
                ae_title=node.aet,
                ext_neg=roles or None,  # type: ignore[arg-type]
                evt_handlers=list(handlers),
                tls_args=(node.tls, node.host) if node.tls is not None else None,
            )
        except OSError:  # pynetdicom resolves the host name first: gaierror
            raise NodeUnreachableError(node, f"{purpose}: {_probe(node) or 'cannot resolve the host'}") from None
        if assoc.is_established:
            break
        err = _why_not(assoc, node, purpose, time.monotonic() - start)
        if attempt < attempts and _transient(err):
            delay = node.retry_delay * 2 ** (attempt - 1)
            log.warning("%s; trying again in %g s (attempt %d of %d)", err, delay, attempt + 1, attempts)
            time.sleep(delay)
            continue
        if attempts > 1 and _transient(err):
            err = type(err)(node, f"{err.problem} (gave up after {attempts} attempts)")
        raise err
    log.info("%s: association established for %s", node, purpose)
    try:
        yield assoc
    except BaseException:
        if assoc.is_established:
            assoc.abort()
        raise
    if assoc.is_established:
        assoc.release()


def require_context(assoc: Association, node: NodeSettings, sop_class: str, purpose: str) -> None:
    """``AssociationRejectedError`` unless the node accepted a presentation context for ``sop_class``."""
    if not any(cx.abstract_syntax == sop_class for cx in assoc.accepted_contexts):
        assoc.abort()
        raise AssociationRejectedError(
            node, f"{purpose}: the node does not offer {sop_name(sop_class)} (it refused that presentation context)"
        )


def lost(assoc: Association, node: NodeSettings, purpose: str, since: float, *, midway: bool = False) -> NetworkError:
    """The error for a request that got no answer: a DIMSE timeout (pynetdicom then aborts) or a
    connection that was lost / aborted. ``since``: ``time.monotonic()`` of the last answer;
    ``midway``: the node had answered part of the request already."""
    waited = time.monotonic() - since
    if waited >= 0.95 * node.dimse_timeout:
        return NetworkTimeoutError(node, f"{purpose}: no answer from the node within {node.dimse_timeout:g} s")
    hint = ""
    if waited < 1.0 and not midway:
        hint = (
            f"; when this happens at once, check that the node knows our AE title {node.our_aet!r} and allows us this"
        )
    return AssociationAbortedError(
        node,
        f"{purpose}: the node aborted the association or the connection was lost "
        f"({waited:.1f} s after the last answer){hint}",
    )


def status_of(status: Dataset | None) -> int | None:
    """The Status (0000,0900) of a response, or None for an empty one (no answer)."""
    if status is None or "Status" not in status:
        return None
    return int(status.Status)


def failure_text(status: Dataset) -> str:
    """'status 0xA700 (Failure: Out of Resources): <the node's error comment>'."""
    code = int(status.Status)
    comment = str(status.get("ErrorComment", "") or "").strip()
    return f"status 0x{code:04X} ({code_to_category(code)})" + (f": {comment}" if comment else "")


def check(status: Dataset | None, assoc: Association, node: NodeSettings, purpose: str, since: float) -> int:
    """The status code of a final answer; raises ``lost(...)`` for no answer and ``RemoteFailureError``
    for a failure status (warnings pass)."""
    code = status_of(status)
    if code is None:
        raise lost(assoc, node, purpose, since)
    assert status is not None
    if code_to_category(code) not in ("Success", "Pending", "Warning"):
        raise RemoteFailureError(node, f"{purpose}: the node answered {failure_text(status)}")
    return code
