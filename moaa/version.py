"""moaa's own version, in one place: the wheel's version (pyproject.toml), `moaa --version`, and the
`moaa_version` every manifest records. A module of its own so that recording it imports nothing else."""

__version__ = "0.1.0"
