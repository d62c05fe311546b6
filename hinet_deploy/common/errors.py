"""The one exception type for errors a user can cause; CLIs print its message on one line."""


class HinetDeployError(Exception):
    """A problem with the user's input or environment, with a message that names it and the fix."""
