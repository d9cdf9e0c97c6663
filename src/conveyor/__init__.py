"""conveyor: build, scan and ship a service with nox and invoke as the single source of truth."""
