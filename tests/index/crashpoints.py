"""Shared by the SIGKILL tests: the crash points of a child process.

``CRASH_POINTS`` is Python source for a child (``python -c``) that defines ``crash_at`` first:
it counts every ``os.replace`` / ``os.fsync`` call once installed
(``os.replace, os.fsync = replace, fsync``) and kills the process with SIGKILL just before the
``crash_at``-th one; ``calls`` is the number of points an uninterrupted run passed.
"""

CRASH_POINTS = r"""
calls = 0
real_replace, real_fsync = os.replace, os.fsync

def _point():
    global calls
    if calls == crash_at:
        os.kill(os.getpid(), signal.SIGKILL)
    calls += 1

def replace(a, b):
    _point()
    return real_replace(a, b)

def fsync(fd):
    _point()
    return real_fsync(fd)
"""
