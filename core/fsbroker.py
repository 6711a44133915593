"""Kombu's filesystem transport (the embedded broker) with messages written atomically.

kombu writes a message file in place (create, lock, write). A consumer that lists the folder
in between moves the still-empty file away and cannot decode it, which stops the worker
("Unrecoverable error: JSONDecodeError"): seen when a worker's reaper re-sent a job while its
own consumer polled. Here a message is written under a name no queue reads, then renamed to
its final name, so a consumer only ever sees whole messages.
"""
from __future__ import annotations

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

PARTIAL_PREFIX = ".partial-"  # kombu's reader matches `<ms>_<uuid>.<queue>.msg` only


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f"{PARTIAL_PREFIX}{uuid.uuid4().hex}")
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
