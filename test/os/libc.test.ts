import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { isIsogroupError } from '../../errors.js';
import {
  C,
  dupCloexec,
  errnoName,
  ioctlBuffer,
  ioctlValue,
  libcAvailable,
  sysBind,
  sysClose,
  sysFlock,
  sysOpen,
  sysPoll,
  sysRecvFrom,
  sysSocket,
} from '../../os/libc.js';
import { tmpDir } from '../helpers/tmp.js';

const FIONREAD = 0x541b; // asm-generic/ioctls.h: bytes left to read (int *), also on regular files

const thrown = (fn: () => unknown): unknown => {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error('expected a throw');
};

describe('libc through koffi', () => {
  it('loads here', () => {
    expect(libcAvailable()).toBe(true);
  });

  it('names errno values the way the kernel headers do', () => {
    expect(errnoName(2)).toBe('ENOENT');
    expect(errnoName(16)).toBe('EBUSY');
    expect(errnoName(11)).toBe('EAGAIN');
    expect(errnoName(9999)).toBe('E9999');
  });

  it('open of a missing path throws a typed error with the errno name', () => {
    const error = thrown(() => sysOpen('/nonexistent/isogroup', C.O_RDONLY));
    expect(isIsogroupError(error)).toBe(true);
    expect(error).toMatchObject({ code: 'E_DEVICE_GONE', details: { syscall: 'open', errno: 'ENOENT', errnoNumber: 2, path: '/nonexistent/isogroup' } });
    const custom = thrown(() => sysOpen('/nonexistent/isogroup', C.O_RDONLY, 0, { code: 'E_NOT_FOUND', what: 'opening group 7' }));
    expect(custom).toMatchObject({ code: 'E_NOT_FOUND', message: expect.stringContaining('opening group 7') });
  });

  it('opens a file, and ioctl writes its answer into the buffer in place', () => {
    const file = path.join(tmpDir(), 'data');
    fs.writeFileSync(file, 'x'.repeat(123));
    const fd = sysOpen(file, C.O_RDONLY);
    try {
      const count = Buffer.alloc(4);
      expect(ioctlBuffer(fd, FIONREAD, count)).toBe(0);
      expect(count.readInt32LE(0)).toBe(123);
      fs.readSync(fd, Buffer.alloc(23));
      ioctlBuffer(fd, FIONREAD, count);
      expect(count.readInt32LE(0)).toBe(100);
      // A duplicate shares the open file (and its offset).
      const dup = dupCloexec(fd);
      expect(dup).not.toBe(fd);
      expect(fs.readSync(dup, Buffer.alloc(200))).toBe(100);
      sysClose(dup);
      // A VFIO request on a regular file: the kernel answers ENOTTY.
      expect(thrown(() => ioctlValue(fd, 0x3b65, 1))).toMatchObject({ details: { errno: 'ENOTTY' } });
    } finally {
      sysClose(fd);
    }
    expect(thrown(() => ioctlBuffer(fd, FIONREAD, Buffer.alloc(4)))).toMatchObject({ details: { errno: 'EBADF' } });
  });

  it('flock: a second open file description cannot take the lock until the first lets go', () => {
    const file = path.join(tmpDir(), 'lock');
    fs.writeFileSync(file, '');
    const a = sysOpen(file, C.O_RDWR);
    const b = sysOpen(file, C.O_RDWR);
    try {
      expect(sysFlock(a, C.LOCK_EX | C.LOCK_NB)).toBe(true);
      expect(sysFlock(b, C.LOCK_EX | C.LOCK_NB)).toBe(false);
      sysFlock(a, C.LOCK_UN);
      expect(sysFlock(b, C.LOCK_EX | C.LOCK_NB)).toBe(true);
    } finally {
      sysClose(a);
      sysClose(b);
    }
  });

  it('opens and binds a NETLINK_KOBJECT_UEVENT socket; a non-blocking read with nothing queued returns null', () => {
    const fd = sysSocket(C.AF_NETLINK, C.SOCK_DGRAM | C.SOCK_NONBLOCK, C.NETLINK_KOBJECT_UEVENT);
    try {
      const addr = Buffer.alloc(12); // struct sockaddr_nl
      addr.writeUInt16LE(C.AF_NETLINK, 0);
      addr.writeUInt32LE(1, 8); // group 1: the kernel's own uevents
      sysBind(fd, addr);
      const revents = sysPoll([{ fd, events: C.POLLIN }], 0);
      expect(revents).toHaveLength(1);
      if ((revents[0]! & C.POLLIN) === 0) expect(sysRecvFrom(fd, Buffer.alloc(8192), C.MSG_DONTWAIT, 12)).toBeNull();
      expect(thrown(() => sysBind(fd, addr))).toMatchObject({ details: { syscall: 'bind', errno: 'EINVAL' } });
    } finally {
      sysClose(fd);
    }
  });

  it('poll reports a regular file readable and an invalid fd as POLLNVAL', () => {
    const file = path.join(tmpDir(), 'p');
    fs.writeFileSync(file, 'abc');
    const fd = sysOpen(file, C.O_RDONLY);
    const closed = sysOpen(file, C.O_RDONLY);
    sysClose(closed);
    try {
      const [r, bad] = sysPoll(
        [
          { fd, events: C.POLLIN },
          { fd: closed, events: C.POLLIN },
        ],
        0,
      );
      expect(r! & C.POLLIN).toBe(C.POLLIN);
      expect(bad! & C.POLLNVAL).toBe(C.POLLNVAL);
    } finally {
      sysClose(fd);
    }
  });
});
