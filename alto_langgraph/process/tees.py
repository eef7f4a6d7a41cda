"""The router's table of streams it sends straight to the folds that consume them.

A stream made by a call on one instance for a fold's call on another is *teed* once
the caller asks (``wire.SUBSCRIBE``): the router sends each of its messages to the
fold's instance, and a copy to the caller, which keeps the stream. Both acknowledge
the chunks they get (``flow.py``); the producer is told the lesser count, so that
neither has more than a window waiting. A tee ends with either call; from then on the
caller alone acknowledges the stream.
"""

from __future__ import annotations

import dataclasses

#: a call, as the router knows it: (the client that made it, its call id)
Call = tuple[bytes, bytes]


@dataclasses.dataclass
class Tee:
    client: bytes
    producer: bytes  # the producer's call id
    fold: bytes  # the fold's (both made by ``client``)
    sid: bytes
    fold_got: int = 0  # chunks the fold's instance acknowledged
    caller_got: int = 0  # and the caller
    told: int = 0  # what the producer was told

    def acknowledged(self, count: int, by_fold: bool) -> int | None:
        """One of the two acknowledged ``count`` chunks: the count to tell the
        producer now, if it grew."""
        if by_fold:
            self.fold_got = max(self.fold_got, count)
        else:
            self.caller_got = max(self.caller_got, count)
        return self._grew(min(self.fold_got, self.caller_got))

    def _grew(self, count: int) -> int | None:
        if count <= self.told:
            return None
        self.told = count
        return count


class Tees:
    def __init__(self) -> None:
        self._streams: dict[tuple[bytes, bytes, bytes], Tee] = {}
        self._of_call: dict[Call, list[Tee]] = {}

    def __len__(self) -> int:
        return len(self._streams)

    def add(self, client: bytes, producer: bytes, fold: bytes, sid: bytes) -> None:
        """Tee the stream, once. A stream id is 1 to 64 ASCII letters and digits (alto's
        are hex); a call is no fold of its own stream."""
        key = (client, producer, sid)
        if key in self._streams or fold == producer or not (sid.isalnum() and len(sid) <= 64):
            return
        tee = self._streams[key] = Tee(client, producer, fold, sid)
        self._of_call.setdefault((client, producer), []).append(tee)
        self._of_call.setdefault((client, fold), []).append(tee)

    def of_stream(self, client: bytes, producer: bytes, sid: bytes) -> Tee | None:
        return self._streams.get((client, producer, sid))

    def into(self, client: bytes, fold: bytes, sid: bytes) -> Tee | None:
        """The tee of stream ``sid`` into the fold's call, if there is one."""
        for tee in self._of_call.get((client, fold), ()):
            if tee.sid == sid and tee.fold == fold:
                return tee
        return None

    def end(self, client: bytes, call: bytes) -> list[tuple[Tee, int]]:
        """The call is over: its tees end. Those whose fold it ran, with what to tell
        their producers now (what the caller acknowledged, if more than they heard)."""
        tell = []
        for tee in self._of_call.pop((client, call), ()):
            del self._streams[(client, tee.producer, tee.sid)]
            other = tee.fold if call == tee.producer else tee.producer
            others = self._of_call.get((client, other))
            if others is not None:
                others.remove(tee)
                if not others:
                    del self._of_call[(client, other)]
            if call == tee.fold and (count := tee._grew(tee.caller_got)) is not None:
                tell.append((tee, count))
        return tell
