"""Errors that the CLI turns into one clear line and an exit code."""

import errno


class UserError(Exception):
    """Bad input from the user (recipe, vocabulary, flags): exit code 2, nothing written."""

    exit_code = 2


class RunError(Exception):
    """A run could not start or continue (engine unreachable, output dir conflict): exit code 1."""

    exit_code = 1


_OS_PROBLEMS = {  # errno -> (what happened, what to do)
    errno.ENOSPC: ("no space left on the device", "free some space"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or raise the quota"),
    errno.EACCES: ("permission denied", "give this user write access to it"),
    errno.EPERM: ("operation not permitted", "give this user write access to it"),
    errno.EROFS: ("read-only filesystem", "make it writable (or use another --out)"),
    errno.EMFILE: ("too many open files", "raise the open-file limit (ulimit -n 65536) or lower engine.concurrency"),
    errno.ENFILE: ("too many open files on this system", "close other programs' files or raise fs.file-max"),
}
_SQLITE_ERRNO = {"database or disk is full": errno.ENOSPC, "readonly database": errno.EROFS}  # sqlite3's words


def os_failure(exc: BaseException, where: object, then: str = "run the command again") -> RunError | None:
    """One line for a filesystem failure anywhere in `exc`'s chain (no space, no permission, read-only
    filesystem, too many open files), naming the path (else `where`) and what to do; None if it is none."""
    import re

    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        code = getattr(seen, "errno", None) if isinstance(seen, OSError) else None
        text = str(seen)
        if code is None:
            match = re.search(r"\[Errno (\d+)\]", text)  # pyarrow's IOError carries it in its text
            code = int(match.group(1)) if match else next(
                (n for phrase, n in _SQLITE_ERRNO.items() if phrase in text.lower()), None)
        if code in _OS_PROBLEMS:
            what, todo = _OS_PROBLEMS[code]
            path = getattr(seen, "filename", None) or where
            return RunError(f"{path}: {what}; {todo}, then {then}")
        seen = seen.__cause__ or seen.__context__
    return None
