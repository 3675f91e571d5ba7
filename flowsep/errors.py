"""The one exception type flowsep raises for a user's mistake.

Every message is one line that names the problem and says what to do; the CLI prints it
as ``flowsep: error: <message>`` and exits with status 2, without a traceback.
"""
import sys


class FlowsepError(ValueError):
    """Bad input, bad file or bad configuration, with a one-line message for the user."""


def exit_status(run, prog: str) -> int:
    """Run ``run()`` as a command's body: its exit status, with a user's mistake (:class:`FlowsepError`)
    as one line ``prog: error: ...`` and status 2, and Ctrl-C as ``prog: interrupted`` and status 130."""
    try:
        return int(run() or 0)
    except FlowsepError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
