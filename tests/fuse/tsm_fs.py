# SPDX-License-Identifier: Apache-2.0
"""A configfs-tsm stand-in on FUSE: the kernel ABI of /sys/kernel/config/tsm (Linux 6.7+,
Documentation/ABI/testing/configfs-tsm) with a simulated TD behind it.

    /usr/bin/python3 tests/fuse/tsm_fs.py MNT --state STACK_STATE_DIR [--provider P]
                                          [--fault concurrent-writer|short-outblob] [--short-len N]

MNT/report/ behaves as the kernel's report directory: ``mkdir`` creates an entry with

    inblob      WO   up to 64 bytes (REPORTDATA); every write increments generation
    outblob     RO   a sim-TD quote (tests/stack/simquote.py, chained to the stack's simulated
                     PCK root, so the local ITA accepts it) carrying the REPORTDATA written
    auxblob     RO   empty (SEV-SNP certificates)
    generation  RO   decimal, newline-terminated
    provider    RO   "tdx_guest" unless --provider says otherwise
    privlevel_floor RO "0"

and ``rmdir`` removes it. Files cannot be created or removed. Only the kernel is simulated:
the client does its real file I/O. ``MNT/stats`` (outside report/) is JSON with counters the
tests assert on: created, removed, quotes, writes, live (entry names).

Fault knobs:
    --provider sev_guest       a wrong provider
    --fault concurrent-writer  the first entry's generation is bumped once more when its
                               outblob is first read (another writer between write and read)
    --fault busy-writer        the same on every entry (the client must give up, cleanly)
    --fault short-outblob      outblob returns only the first --short-len bytes of the quote

Runs in the foreground, single-threaded; stop it with ``fusermount3 -u MNT``.
"""

import argparse
import errno
import json
import os
import stat
import sys
import time

from fusepy import FUSE, FuseOSError, Operations

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from tests.stack.simquote import make_sim_quote  # noqa: E402

INBLOB_MAX = 64
READ_ONLY = ("outblob", "auxblob", "generation", "provider", "privlevel_floor")
WRITE_ONLY = ("inblob",)


class Entry:
    def __init__(self, name, first):
        self.name = name
        self.first = first
        self.inblob = b""
        self.generation = 0
        self.outblob = None          # (generation, bytes) of the last quote produced
        self.outblob_reads = 0
        self.ctime = time.time()


class TsmFs(Operations):
    def __init__(self, state_dir, provider, fault, short_len):
        self.state_dir = state_dir
        self.provider = provider
        self.fault = fault
        self.short_len = short_len
        self.entries = {}
        self.stats = {"created": 0, "removed": 0, "quotes": 0, "writes": 0}
        self.start = time.time()

    # ------------------------------------------------------------------ helpers

    def _split(self, path):
        """'/report/e/inblob' -> ['report', 'e', 'inblob']."""
        return [p for p in path.split("/") if p]

    def _entry(self, name):
        e = self.entries.get(name)
        if e is None:
            raise FuseOSError(errno.ENOENT)
        return e

    def _stats_bytes(self):
        return (json.dumps(dict(self.stats, live=sorted(self.entries))) + "\n").encode()

    def _attr_bytes(self, e, attr):
        if attr == "generation":
            return b"%d\n" % e.generation
        if attr == "provider":
            return (self.provider + "\n").encode()
        if attr == "privlevel_floor":
            return b"0\n"
        if attr == "auxblob":
            return b""
        if attr == "outblob":
            return self._outblob(e)
        raise FuseOSError(errno.EACCES)

    def _outblob(self, e):
        if len(e.inblob) != INBLOB_MAX:
            raise FuseOSError(errno.EINVAL)   # tdx_guest needs exactly 64 bytes of REPORTDATA
        if e.outblob is None or e.outblob[0] != e.generation:
            quote = make_sim_quote(self.state_dir, e.inblob)
            self.stats["quotes"] += 1
            if self.fault == "short-outblob":
                quote = quote[:self.short_len]
            e.outblob = (e.generation, quote)
        return e.outblob[1]

    # ------------------------------------------------------------------ FUSE operations

    def getattr(self, path, fh=None):
        parts = self._split(path)
        now = self.start
        base = {"st_uid": 0, "st_gid": 0, "st_atime": now, "st_mtime": now, "st_ctime": now}
        if len(parts) == 0 or parts == ["report"]:
            return dict(base, st_mode=stat.S_IFDIR | 0o755, st_nlink=2)
        if parts == ["stats"]:
            return dict(base, st_mode=stat.S_IFREG | 0o444, st_nlink=1, st_size=4096)
        if parts[0] != "report" or len(parts) > 3:
            raise FuseOSError(errno.ENOENT)
        e = self._entry(parts[1])
        if len(parts) == 2:
            return dict(base, st_mode=stat.S_IFDIR | 0o755, st_nlink=2, st_ctime=e.ctime)
        if parts[2] in READ_ONLY:
            return dict(base, st_mode=stat.S_IFREG | 0o444, st_nlink=1, st_size=4096)
        if parts[2] in WRITE_ONLY:
            return dict(base, st_mode=stat.S_IFREG | 0o200, st_nlink=1, st_size=4096)
        raise FuseOSError(errno.ENOENT)

    def readdir(self, path, fh):
        parts = self._split(path)
        if not parts:
            return [".", "..", "report", "stats"]
        if parts == ["report"]:
            return [".", ".."] + sorted(self.entries)
        if parts[0] == "report" and len(parts) == 2:
            self._entry(parts[1])
            return [".", ".."] + list(READ_ONLY) + list(WRITE_ONLY)
        raise FuseOSError(errno.ENOTDIR)

    def mkdir(self, path, mode):
        parts = self._split(path)
        if len(parts) != 2 or parts[0] != "report":
            raise FuseOSError(errno.EPERM)
        if parts[1] in self.entries:
            raise FuseOSError(errno.EEXIST)
        self.entries[parts[1]] = Entry(parts[1], first=self.stats["created"] == 0)
        self.stats["created"] += 1

    def rmdir(self, path):
        parts = self._split(path)
        if len(parts) != 2 or parts[0] != "report":
            raise FuseOSError(errno.EPERM if len(parts) < 2 else errno.ENOTDIR)
        self._entry(parts[1])
        del self.entries[parts[1]]
        self.stats["removed"] += 1

    def open(self, path, flags):
        parts = self._split(path)
        accmode = flags & os.O_ACCMODE
        if parts == ["stats"]:
            if accmode != os.O_RDONLY:
                raise FuseOSError(errno.EACCES)
            return 0
        if len(parts) != 3 or parts[0] != "report":
            raise FuseOSError(errno.ENOENT)
        self._entry(parts[1])
        if parts[2] in READ_ONLY and accmode != os.O_RDONLY:
            raise FuseOSError(errno.EACCES)
        if parts[2] in WRITE_ONLY and accmode != os.O_WRONLY:
            raise FuseOSError(errno.EACCES)
        if parts[2] not in READ_ONLY + WRITE_ONLY:
            raise FuseOSError(errno.ENOENT)
        return 0

    def create(self, path, mode, fi=None):
        raise FuseOSError(errno.EACCES)

    def unlink(self, path):
        raise FuseOSError(errno.EPERM)

    def truncate(self, path, length, fh=None):
        parts = self._split(path)
        if len(parts) == 3 and parts[2] in WRITE_ONLY:
            return 0   # O_TRUNC on an attribute is harmless, as in configfs
        raise FuseOSError(errno.EACCES)

    def read(self, path, size, offset, fh):
        parts = self._split(path)
        if parts == ["stats"]:
            return self._stats_bytes()[offset:offset + size]
        e = self._entry(parts[1])
        if parts[2] == "outblob":
            data = self._outblob(e)
            if offset == 0:
                e.outblob_reads += 1
                racing = self.fault == "busy-writer" or (self.fault == "concurrent-writer" and e.first)
                if racing and e.outblob_reads == 1:
                    e.generation += 1   # another writer wrote inblob between our write and read
        else:
            data = self._attr_bytes(e, parts[2])
        return data[offset:offset + size]

    def write(self, path, data, offset, fh):
        parts = self._split(path)
        if len(parts) != 3 or parts[2] not in WRITE_ONLY:
            raise FuseOSError(errno.EACCES)
        e = self._entry(parts[1])
        if offset + len(data) > INBLOB_MAX:
            raise FuseOSError(errno.EINVAL)
        blob = bytearray(e.inblob.ljust(offset, b"\0"))
        blob[offset:offset + len(data)] = data
        e.inblob = bytes(blob)
        e.generation += 1
        self.stats["writes"] += 1
        return len(data)

    def statfs(self, path):
        return {"f_bsize": 4096, "f_namemax": 255}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mountpoint")
    ap.add_argument("--state", required=True, help="local stack state dir (simulated PCK)")
    ap.add_argument("--provider", default="tdx_guest")
    ap.add_argument("--fault", choices=["concurrent-writer", "busy-writer", "short-outblob"])
    ap.add_argument("--short-len", type=int, default=1000)
    args = ap.parse_args()
    fs = TsmFs(os.path.abspath(args.state), args.provider, args.fault, args.short_len)
    FUSE(fs, args.mountpoint, foreground=True, nothreads=True, direct_io=True,
         attr_timeout=0, entry_timeout=0, negative_timeout=0, fsname="tsm_fs")


if __name__ == "__main__":
    main()
