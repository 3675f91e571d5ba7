"""The one exception type flowsep raises for a user's mistake.

Every message is one line that names the problem and says what to do; the CLI prints it
as ``flowsep: error: <message>`` and exits with status 2, without a traceback.
"""


class FlowsepError(ValueError):
    """Bad input, bad file or bad configuration, with a one-line message for the user."""
