"""
Files replaced atomically and durably: readers see the old content or the
whole new one, never a part, and the new one is on disk (data and
directory entry) before the function returns.
"""

import contextlib
import os
import tempfile


def fsync_directory(directory):
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path, mode="w", perms=0o600, sync_directory=True,
                **open_args):
    """Write ``path`` through the yielded file object; it replaces the old
    file only if the block completes.  The temporary file is created 0600,
    so a secret never exists with looser permissions.  Without
    ``sync_directory`` the caller syncs the directory (once after many
    files)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory,
                               prefix="." + os.path.basename(path) + ".")
    try:
        with open(fd, mode, **open_args) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if perms != 0o600:
            os.chmod(tmp, perms)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync_directory:
        fsync_directory(directory)


def write_atomically(path, data, perms=0o600):
    mode = "wb" if isinstance(data, bytes) else "w"
    with atomic_file(path, mode, perms) as f:
        f.write(data)
