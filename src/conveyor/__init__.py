"""conveyor: build, scan and ship a service with nox and invoke as the single source of truth."""

import sys

# The docker SDK imports its ssh:// transport, and with it paramiko, as it is imported: about
# 0.6 s of every command's start, for a transport only ssh hosts use. It is held back here and
# loaded by engine.connect when an endpoint is ssh:// (engine.ssh_transport). When docker was
# imported before conveyor, the transport is already there and nothing is held back.
if "docker" not in sys.modules:
    sys.modules.setdefault("docker.transport.sshconn", None)  # type: ignore[arg-type]
