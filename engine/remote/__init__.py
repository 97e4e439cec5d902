"""Scale-out: the redis backend (arq) that hands model work to `atelier worker` processes.

- protocol.py: Redis key names and the wire format (requests, PNG results, errors).
- client.py: RemoteQueue, the bot side (enqueue, re-attach, progress, cancel, dead letters).
- worker.py: QueueWorker, the `atelier worker` process (arq consumer, own arbiter and models).
- registry.py: worker heartbeats, the /queue listing and reaping of dead workers.
- render.py: RemoteRenderer (the local ones: engine.runtime.render.LocalRenderer, engine.jobs.clips.LocalClips).
"""

from engine.remote.client import RemoteQueue, release_orphans
from engine.remote.protocol import RemoteCrash, RemoteJobFailed
from engine.remote.registry import WorkerRegistry
from engine.remote.render import RemoteRenderer, remote_handler

__all__ = [
    "RemoteCrash",
    "RemoteJobFailed",
    "RemoteQueue",
    "RemoteRenderer",
    "WorkerRegistry",
    "release_orphans",
    "remote_handler",
]
