"""Hosts over SSH: probes (GPU memory, serving stack, GGUF inventory), preflight of role changes,
and rebuild/verify jobs for the llama.cpp serving binary. Never imports Textual."""

from .service import HostProbe, HostsService
from .transport import CommandResult, HostKeyRefused, HostUnreachable, LocalTransport, SshTransport, TransportError

__all__ = [
    "CommandResult",
    "HostKeyRefused",
    "HostProbe",
    "HostUnreachable",
    "HostsService",
    "LocalTransport",
    "SshTransport",
    "TransportError",
]
