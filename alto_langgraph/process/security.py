"""Who may talk to a deployment's router: the processes its app started, and no one else.

The app makes credentials for each peer of a deployment (itself, ``APP``, and every
stage instance, by instance id) when the deployment starts, and hands them to the
processes it forks through the fork server's pipe: they are never written to disk or
to the environment. The router checks them on every connection it accepts (ZeroMQ's
ZAP protocol, answered by ``Gatekeeper`` on the router's own loop) and learns each
connection's peer name from that check, not from anything the peer says about itself.

* ``tcp``: CURVE. The router has a key pair, every peer its own; a connection proves
  that it holds a peer's secret key, and its traffic is encrypted and integrity-checked,
  so the router may listen beyond loopback.
* ``ipc``: PLAIN with a random 256-bit token per peer. The socket directory (mode 0700)
  already keeps other users out, and nothing can read or inject into a unix socket's
  stream; the token binds every connection to one peer without encrypting each message
  (CURVE costs milliseconds per megabyte of payload).
"""

from __future__ import annotations

import dataclasses
import hmac
import secrets
from typing import Any

import zmq
import zmq.utils.z85

#: the app process's peer name (the only peer that may send control messages)
APP = b"app"
#: where libzmq asks for a verdict on each connection (one handler per context)
ZAP_ADDRESS = "inproc://zeromq.zap.01"
#: ZAP domains of the router's two sockets: coordinators' calls, instances
FRONT, BACK = b"front", b"back"

MECHANISMS = {"tcp": "curve", "ipc": "plain"}


@dataclasses.dataclass(frozen=True)
class PeerCredentials:
    """What one peer holds: enough to connect as itself, never as another peer."""

    name: bytes
    mechanism: str
    secret: bytes  # curve: the peer's z85 secret key; plain: its token
    public: bytes = b""  # curve: the peer's z85 public key
    server_public: bytes = b""  # curve: the router's z85 public key

    def apply(self, sock: Any) -> None:
        """Set up a client socket (before it connects)."""
        if self.mechanism == "curve":
            sock.curve_serverkey = self.server_public
            sock.curve_publickey = self.public
            sock.curve_secretkey = self.secret
        else:
            sock.plain_username = self.name
            sock.plain_password = self.secret

    def __repr__(self) -> str:  # secrets stay out of logs and tracebacks
        return f"PeerCredentials({self.name!r}, {self.mechanism})"


@dataclasses.dataclass(frozen=True)
class RouterCredentials:
    """What the router holds: its own key pair and each peer's proof (a public key or
    a token), never a peer's secret key."""

    mechanism: str
    peers: dict[bytes, bytes]  # proof -> peer name (curve: raw public key)
    tokens: dict[bytes, bytes]  # peer name -> token (plain)
    public: bytes = b""
    secret: bytes = b""

    def serve(self, sock: Any, domain: bytes) -> None:
        """Set up one of the router's sockets (before it binds)."""
        sock.zap_domain = domain
        if self.mechanism == "curve":
            sock.curve_server = True
            sock.curve_secretkey = self.secret
            sock.curve_publickey = self.public
        else:
            sock.plain_server = True

    def peer_of(self, mechanism: bytes, credentials: list[bytes]) -> bytes | None:
        """The peer a connection proved to be, or None."""
        if mechanism == b"CURVE" and self.mechanism == "curve" and len(credentials) == 1:
            return self.peers.get(credentials[0])
        if mechanism == b"PLAIN" and self.mechanism == "plain" and len(credentials) == 2:
            name, token = credentials
            expected = self.tokens.get(name)
            if expected is not None and hmac.compare_digest(expected, token):
                return name
        return None

    def __repr__(self) -> str:
        return f"RouterCredentials({self.mechanism}, {len(self.tokens or self.peers)} peers)"


class Keyring:
    """The app's side: one deployment's credentials, made on first use per peer (a
    restarted instance gets the same ones back)."""

    def __init__(self, transport: str) -> None:
        self.mechanism = MECHANISMS[transport]
        self._server = zmq.curve_keypair() if self.mechanism == "curve" else (b"", b"")
        self._peers: dict[bytes, PeerCredentials] = {}

    def peer(self, name: bytes) -> PeerCredentials:
        creds = self._peers.get(name)
        if creds is None:
            if self.mechanism == "curve":
                public, secret = zmq.curve_keypair()
                creds = PeerCredentials(name, "curve", secret, public, self._server[0])
            else:
                creds = PeerCredentials(name, "plain", secrets.token_hex(32).encode())
            self._peers[name] = creds
        return creds

    def router(self, names: list[bytes]) -> RouterCredentials:
        """The router's credentials, admitting exactly the peers ``names``."""
        peers = [self.peer(n) for n in names]
        if self.mechanism == "curve":
            proofs = {zmq.utils.z85.decode(p.public): p.name for p in peers}
            return RouterCredentials("curve", proofs, {}, *self._server)
        return RouterCredentials("plain", {}, {p.name: p.secret for p in peers})


class Gatekeeper:
    """The router's ZAP handler: admits a connection to the back end only from a stage
    instance and to the front end from any peer, and names the connection after the
    peer (its ``User-Id``, which the router reads off the messages it receives)."""

    def __init__(self, context: Any, creds: RouterCredentials) -> None:
        self.creds = creds
        self.sock = context.socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(ZAP_ADDRESS)  # before the router binds: no connection goes unchecked
        self.refused = 0

    def answer(self) -> None:
        """Answer one ZAP request (the socket is readable)."""
        request = self.sock.recv_multipart()
        if len(request) < 6:  # not from libzmq: nothing to answer
            return
        version, request_id, domain, _address, _identity, mechanism, *credentials = request
        peer = self.creds.peer_of(mechanism, credentials)
        if peer is not None and not (domain == BACK and peer == APP):
            reply = [version, request_id, b"200", b"OK", peer, b""]
        else:
            self.refused += 1
            reply = [version, request_id, b"400", b"unknown peer", b"", b""]
        self.sock.send_multipart(reply)


def peer_name(frame: Any) -> bytes | None:
    """The peer a received frame came from (its connection's ZAP ``User-Id``)."""
    try:
        return frame.get("User-Id").encode()
    except (zmq.ZMQError, AttributeError, UnicodeError):
        return None
