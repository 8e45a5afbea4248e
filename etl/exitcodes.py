"""Exit codes of the `etl` command (documented in the README)."""

OK = 0  # everything ran; rejects (if any) are within the thresholds
QUALITY = 1  # the run finished, but rejects are above defaults.max_reject_rate / max_rejects
CONFIG = 2  # the configuration is invalid, or a command line argument is wrong
RUNTIME = 3  # a source or target failed (missing file, lost connection, undecodable file); state is kept
LOCKED = 4  # another run holds the project's lock
INTERRUPTED = 130  # stopped by Ctrl-C or SIGTERM after the batch in hand was committed
