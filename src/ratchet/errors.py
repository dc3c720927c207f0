"""The two kinds of failure the CLI tells apart by exit code."""


class UsageError(Exception):
    """The user must fix something (spec, arguments, repository state): exit 2, one line."""


class RunError(Exception):
    """The run could not go on (baseline failed, branch moved under us): exit 1, one line."""
