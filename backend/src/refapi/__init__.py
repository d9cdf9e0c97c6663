"""conveyor reference API."""
