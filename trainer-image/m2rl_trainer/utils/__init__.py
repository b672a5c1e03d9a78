"""Small shared utilities (processes, ports, files)."""
