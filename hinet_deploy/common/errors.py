"""The one exception type for errors a user can cause; CLIs print its message on one line."""
import errno


class HinetDeployError(Exception):
    """A problem with the user's input or environment, with a message that names it and the fix."""


def first_line(exc: BaseException) -> str:
    """An exception's first line, or its type's name where it says nothing: what one-line errors
    quote of a library's message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# A write that fails with one of these dooms every later write to the same disk.
DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class DiskFullError(HinetDeployError):
    """The disk an output goes to is full (or the file size limit is reached): nothing later can be
    written there either, so a run stops at the first one, saying what finished."""
