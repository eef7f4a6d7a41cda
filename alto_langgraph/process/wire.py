"""The wire format between the coordinator, the router and stage instances.

Every message is a list of zmq frames. The first frame the router sees after the
sender's identity is the *envelope*: four ``NUL``-separated byte fields

    kind, call id, destination stage, routing key

which is all the router ever reads. The payload that follows (a pickle: the call's
input and config, an output, an exception) is opaque to it: the router forwards it
without deserialising it.

Frames on each hop (identities are added and stripped by zmq ``ROUTER`` sockets):

    coordinator -> router      envelope, payload
    router -> instance         client id, envelope, payload
    instance -> router         client id, envelope, payload      (result, error, emit)
    router -> coordinator      envelope, payload

A call's ``CHUNK``, ``EMIT``, ``CALLBACK``, ``WRITES``, ``HEARTBEAT``, ``CALL``,
``STORE``, ``YIELD``, ``STREAM`` and ``READS`` messages travel the same path as its result and
ahead of it, so the coordinator sees them in the order the node made them. ``FEED`` messages go the
other way, after the call's ``TASK``, to the instance that has the call.

Streams between processes (a producer's chunks for a fold, ``streams.py``):

    producer --STREAM--> router --------------------------> caller (it keeps the chunks)
                                 `--FEED (once SUBSCRIBEd)---> the fold's instance

The caller feeds the fold what came before its ``SUBSCRIBE`` (FEED, via the router) and
gets a ``TEED`` copy of what the router sent the fold itself, so each chunk reaches the
fold once, in two hops, with the producer's own pickle. Both kinds carry the stream id
and the chunk's sequence number in the routing key field (``stream_key``): the fold puts
the two paths back in order. The caller acknowledges the chunks it has handled with
``CREDIT`` messages, and so does the fold's instance those of a teed stream; the router
tells the producer the lesser count, and it sends no more than a window ahead of it
(``flow.py``).
"""

from __future__ import annotations

from typing import NamedTuple

# message kinds (first envelope field)
TASK = b"T"  # run the stage's node on a payload
RESULT = b"R"  # the node returned (payload: the pickled output)
ERROR = b"E"  # the node raised (payload: the pickled exception)
CHUNK = b"P"  # a chunk of the node's output, when the caller streams it (then RESULT: None)
EMIT = b"S"  # a chunk the node wrote to its stream writer, before its result
CALLBACK = b"B"  # a LangChain callback event of a run inside the node (payload: name, args)
WRITES = b"W"  # writes the node made to its task directly (push_message's state write)
HEARTBEAT = b"H"  # the node called runtime.heartbeat() (its idle timeout is the caller's)
CALL = b"K"  # a functional-API @task call made inside the node, for the caller's loop
#   (stage field: the instance that waits; routing key field: the call's sub-id)
STORE = b"O"  # operations on runtime.store made inside the node, for the caller's store
#   (fields as CALL's; the outcome comes back as a CALL_RESULT)
CALL_RESULT = b"k"  # coordinator -> the waiting instance: that @task call's outcome
YIELD = b"D"  # an item a @streaming node yielded (payload: the pickled Command)
STREAM = b"Q"  # an event of a stream the node produces (payload: sid, event, value)
READS = b"A"  # what the node read of its state view (a task run ahead of its superstep)
FEED = b"I"  # coordinator -> the instance running a call: an event of a stream in its input
#   (routing key field: ``stream_key``; the router sends a SUBSCRIBE'd stream's as FEEDs too)
SUBSCRIBE = b"J"  # coordinator -> router: send a stream's further chunks to the fold's call
#   too (call id: the fold's call; routing key: the stream id; payload: the producer's call)
TEED = b"V"  # router -> coordinator: a STREAM message it has also sent to the fold's call
#   (stage field: that call's id)
CREDIT = b"G"  # the consumer of a stream -> router -> its producer: chunks acknowledged
#   (routing key field: ``stream_key`` of the stream id and the count)
LOST = b"L"  # the instance running the call died (payload: reason, utf-8)
CANCEL = b"X"  # the caller gave up on a call (timeout, cancelled request)
READY = b"Y"  # an instance is up (instance -> router), or all are (router -> coordinator)
FAILED = b"F"  # an instance could not start (payload: reason, utf-8)
CONTROL = b"C"  # coordinator -> router: stage field names the command
#   (router -> the app, with no call id: a notice, see CTL_REPLACE and CTL_RECYCLE)
PULSE = b"U"  # an instance's event loop is alive (instance -> router, every PULSE_EVERY s;
#   payload: a JSON object of its figures, with "verdict" "", "stuck" or "recycle" and "why")

# control commands (stage field of a CONTROL envelope)
CTL_WAIT_READY = b"wait-ready"  # reply READY once every instance is up, FAILED if one failed
CTL_DEAD = b"dead"  # routing key field: the instance id; payload: why
CTL_RESTARTED = b"restarted"  # routing key field: the instance id (it will send READY)
CTL_FAILED = b"failed"  # routing key field: the instance id, given up on; payload: why
CTL_STATS = b"stats"  # reply READY with payload: repr of per-instance counters
# notices, router -> app (routing key field: the instance id; payload: why)
CTL_REPLACE = b"replace"  # the instance is stuck: kill it (supervision restarts it)
CTL_RECYCLE = b"recycle"  # the instance has drained after asking to be recycled: stop it

#: how often an instance's event loop reports that it is alive
PULSE_EVERY = 0.5

#: the stream id of a FEED carrying the reason of a drain requested of the call's run
#: (``Runtime.control``) while its node runs
DRAIN_SID = "\0drain"

SEP = b"\0"


class Envelope(NamedTuple):
    kind: bytes
    call_id: bytes
    stage: bytes
    routing_key: bytes  # b"" when the item may go to any instance

    def encode(self) -> bytes:
        return SEP.join(self)


def envelope(kind: bytes, call_id: bytes = b"", stage: bytes = b"", key: bytes = b"") -> bytes:
    return SEP.join((kind, call_id, stage, key))


def decode(frame: bytes) -> Envelope:
    return Envelope(*frame.split(SEP, 3))


def stream_key(sid: str, seq: int) -> bytes:
    """The routing key of a stream's message: its id and a sequence number (or count)."""
    return f"{sid}/{seq}".encode()


def parse_stream_key(key: bytes) -> tuple[str, int] | None:
    """``stream_key``'s parts, or None if ``key`` is no such thing."""
    sid, sep, seq = key.partition(b"/")
    if not sep or not seq.isdigit() or len(seq) > 18:
        return None
    return sid.decode(errors="replace"), int(seq)


def instance_id(stage: str, index: int) -> bytes:
    """The zmq identity of instance ``index`` of ``stage`` (readable in errors and stats)."""
    return f"{stage}#{index}".encode()
