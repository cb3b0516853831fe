"""CLI sub-commands, one module each, registered by moaa.cli (keep imports light here)."""
