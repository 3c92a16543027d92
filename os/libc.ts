// The few libc calls Node does not offer (ioctl, raw sockets, sendmsg/recvmsg with ancillary data,
// getsockopt, poll, flock), bound through koffi (an FFI library that ships prebuilt binaries).
//
// Rules of this module:
// - Nothing happens at import: libc is loaded on the first call (so a module importing this one is
//   importable anywhere, even where koffi cannot load).
// - Every failing call throws IsogroupError with details {syscall, errno: 'ENOENT', errnoNumber}; the
//   code comes from the caller's `code` argument or, by default, from codeForErrno. Non-blocking calls
//   return null on EAGAIN instead of throwing.
// - Pointers inside structures (msghdr, iovec) are real addresses of Node Buffers (koffi.address),
//   kept referenced for the duration of the call; Buffer.alloc memory never moves.
// - Linux on 64-bit x86/arm only: the structure layouts below (msghdr 56 bytes, cmsghdr 16, ...) are
//   the LP64 glibc/musl ones, checked against <sys/socket.h> with a C compiler on x86_64.
import { createRequire } from 'node:module';
import * as os from 'node:os';
import { codeForErrno, type ErrorCode, IsogroupError } from '../errors.js';

/** Constants from the Linux uapi / glibc headers (identical on x86_64 and aarch64). */
export const C = {
  O_RDONLY: 0,
  O_WRONLY: 1,
  O_RDWR: 2,
  O_NONBLOCK: 0o4000,
  O_CLOEXEC: 0o2000000,
  AF_UNIX: 1,
  AF_NETLINK: 16,
  SOCK_STREAM: 1,
  SOCK_DGRAM: 2,
  SOCK_RAW: 3,
  SOCK_NONBLOCK: 0o4000,
  SOCK_CLOEXEC: 0o2000000,
  SOL_SOCKET: 1,
  SO_RCVBUF: 8,
  SO_PASSCRED: 16,
  SO_PEERCRED: 17,
  SO_RCVBUFFORCE: 33,
  SCM_RIGHTS: 1,
  SCM_CREDENTIALS: 2,
  MSG_CTRUNC: 0x8,
  MSG_TRUNC: 0x20,
  MSG_DONTWAIT: 0x40,
  MSG_NOSIGNAL: 0x4000,
  MSG_CMSG_CLOEXEC: 0x40000000,
  POLLIN: 0x1,
  POLLOUT: 0x4,
  POLLERR: 0x8,
  POLLHUP: 0x10,
  POLLNVAL: 0x20,
  LOCK_SH: 1,
  LOCK_EX: 2,
  LOCK_NB: 4,
  LOCK_UN: 8,
  F_DUPFD_CLOEXEC: 1030,
  NETLINK_KOBJECT_UEVENT: 15,
} as const;

/** LP64 layouts (struct msghdr, struct cmsghdr, struct iovec, struct pollfd). */
export const LAYOUT = {
  msghdr: { size: 56, name: 0, namelen: 8, iov: 16, iovlen: 24, control: 32, controllen: 40, flags: 48 },
  iovec: { size: 16, base: 0, len: 8 },
  cmsghdr: { size: 16, len: 0, level: 8, type: 12 },
  pollfd: { size: 8, fd: 0, events: 4, revents: 6 },
} as const;

// errno number -> name from Node's own table (the first name wins: EAGAIN over EWOULDBLOCK).
const ERRNO_NAMES = new Map<number, string>();
for (const [name, value] of Object.entries(os.constants.errno)) {
  if (!ERRNO_NAMES.has(value)) ERRNO_NAMES.set(value, name);
}
export const errnoName = (errno: number): string => ERRNO_NAMES.get(errno) ?? `E${errno}`;
export const errnoNumber = (name: string): number | undefined => (os.constants.errno as Record<string, number>)[name];

const EAGAIN = os.constants.errno.EAGAIN;
const EINTR = os.constants.errno.EINTR;

/** Build the typed error for a failed call; `code` overrides the errno-derived one. */
export const syscallError = (
  syscall: string,
  errno: number,
  context: { code?: ErrorCode; what?: string; details?: Record<string, unknown> } = {},
): IsogroupError => {
  const name = errnoName(errno);
  const code = context.code ?? codeForErrno(name);
  const what = context.what ? `${context.what}: ` : '';
  return new IsogroupError(code, `${what}${syscall} failed: ${name}`, { syscall, errno: name, errnoNumber: errno, ...context.details });
};

// koffi itself is loaded on first use too (it loads a native addon): importing this module is free.
type Koffi = typeof import('koffi').default;
let koffiModule: Koffi | undefined;
const K = (): Koffi => (koffiModule ??= createRequire(import.meta.url)('koffi') as Koffi);

type Fn = (...args: unknown[]) => number;
interface Libc {
  open: Fn;
  close: Fn;
  ioctl: Fn;
  socket: Fn;
  bind: Fn;
  recvfrom: Fn;
  setsockopt: Fn;
  getsockopt: Fn;
  sendmsg: Fn;
  recvmsg: Fn;
  poll: Fn;
  flock: Fn;
  fcntl: Fn;
}

let bound: Libc | undefined;
let loaded: ReturnType<Koffi['load']> | undefined;

// libc itself, loaded once for every binding in this module.
const libraryC = (): ReturnType<Koffi['load']> => {
  if (loaded) return loaded;
  if (process.platform !== 'linux' || (process.arch !== 'x64' && process.arch !== 'arm64')) {
    throw new IsogroupError('E_UNSUPPORTED', `libc calls need Linux on x64 or arm64, not ${process.platform}/${process.arch}`, {
      platform: process.platform,
      arch: process.arch,
    });
  }
  try {
    loaded = K().load('libc.so.6');
  } catch (error) {
    throw new IsogroupError('E_UNSUPPORTED', `cannot load libc.so.6 through koffi: ${(error as Error).message}`, {}, { cause: error });
  }
  return loaded;
};

// Declare the functions once, on first use.
const libc = (): Libc => {
  if (bound) return bound;
  const lib = libraryC();
  const f = (decl: string): Fn => lib.func(decl) as unknown as Fn;
  bound = {
    open: f('int open(const char *path, int flags, uint32_t mode)'),
    close: f('int close(int fd)'),
    // ioctl is variadic in libc: each extra argument is passed as (type, value).
    ioctl: f('int ioctl(int fd, unsigned long request, ...)'),
    socket: f('int socket(int domain, int type, int protocol)'),
    bind: f('int bind(int fd, const void *addr, uint32_t addrlen)'),
    recvfrom: f('intptr_t recvfrom(int fd, void *buf, size_t len, int flags, void *addr, _Inout_ uint32_t *addrlen)'),
    setsockopt: f('int setsockopt(int fd, int level, int name, const void *value, uint32_t len)'),
    getsockopt: f('int getsockopt(int fd, int level, int name, void *value, _Inout_ uint32_t *len)'),
    sendmsg: f('intptr_t sendmsg(int fd, const void *msg, int flags)'),
    recvmsg: f('intptr_t recvmsg(int fd, void *msg, int flags)'),
    poll: f('int poll(void *fds, unsigned long nfds, int timeout)'),
    flock: f('int flock(int fd, int op)'),
    fcntl: f('int fcntl(int fd, int cmd, ...)'),
  };
  return bound;
};

/** True when libc can be bound here (Linux x64/arm64 with koffi's prebuilt binary). */
export const libcAvailable = (): boolean => {
  try {
    libc();
    return true;
  } catch {
    return false;
  }
};

const errno = (): number => K().errno();

/** openat/read/readlinkat/getdents64/close, bound on their own (a libc without getdents64 only loses this). */
export interface FileCalls {
  open(path: string, flags: number): number;
  openat(dirfd: number, name: string, flags: number): number;
  read(fd: number, buf: Buffer, len: number): number;
  readlinkat(dirfd: number, name: string, buf: Buffer, len: number): number;
  getdents64(fd: number, buf: Buffer, len: number): number;
  close(fd: number): number;
}

let fileCallsBound: FileCalls | null | undefined;

/** The file calls, or null where koffi or libc cannot provide them (callers then use node:fs). */
export const fileCalls = (): FileCalls | null => {
  if (fileCallsBound !== undefined) return fileCallsBound;
  try {
    const lib = libraryC();
    const f = (decl: string) => lib.func(decl) as unknown as (...args: unknown[]) => number;
    const open = f('int open(const char *path, int flags)');
    const openat = f('int openat(int dirfd, const char *name, int flags)');
    const read = f('intptr_t read(int fd, void *buf, size_t len)');
    const readlinkat = f('intptr_t readlinkat(int dirfd, const char *name, void *buf, size_t len)');
    const getdents64 = f('intptr_t getdents64(int fd, void *buf, size_t len)');
    const close = f('int close(int fd)');
    fileCallsBound = {
      open: (path, flags) => Number(open(path, flags | C.O_CLOEXEC)),
      openat: (dirfd, name, flags) => Number(openat(dirfd, name, flags | C.O_CLOEXEC)),
      read: (fd, buf, len) => Number(read(fd, buf, len)),
      readlinkat: (dirfd, name, buf, len) => Number(readlinkat(dirfd, name, buf, len)),
      getdents64: (fd, buf, len) => Number(getdents64(fd, buf, len)),
      close: (fd) => Number(close(fd)),
    };
  } catch {
    fileCallsBound = null;
  }
  return fileCallsBound;
};

// Retry a call interrupted by a signal; return [result, errno].
const call = (fn: () => number): [number, number] => {
  for (;;) {
    const r = Number(fn());
    if (r >= 0) return [r, 0];
    const e = errno();
    if (e !== EINTR) return [r, e];
  }
};

interface CallContext {
  code?: ErrorCode;
  what?: string;
  details?: Record<string, unknown>;
}

/** open(2); returns the fd. O_CLOEXEC is always added. */
export const sysOpen = (path: string, flags: number, mode = 0, ctx: CallContext = {}): number => {
  const [fd, e] = call(() => libc().open(path, flags | C.O_CLOEXEC, mode));
  if (fd < 0) throw syscallError('open', e, { ...ctx, details: { path, ...ctx.details } });
  return fd;
};

/** close(2). On Linux the fd is released even when close reports an error, so never retry. */
export const sysClose = (fd: number): void => {
  libc().close(fd);
};

/** ioctl(fd, request, unsigned long arg): for requests that take an integer by value. */
export const ioctlValue = (fd: number, request: number, arg: number, ctx: CallContext = {}): number => {
  const [r, e] = call(() => libc().ioctl(fd, request, 'unsigned long', arg));
  if (r < 0) throw syscallError(`ioctl(${hex(request)})`, e, { ...ctx, details: { fd, request: hex(request), ...ctx.details } });
  return r;
};

/** ioctl(fd, request, void *arg): the kernel reads and/or writes `buf` in place. */
export const ioctlBuffer = (fd: number, request: number, buf: Buffer, ctx: CallContext = {}): number => {
  const [r, e] = call(() => libc().ioctl(fd, request, 'void *', buf));
  if (r < 0) throw syscallError(`ioctl(${hex(request)})`, e, { ...ctx, details: { fd, request: hex(request), ...ctx.details } });
  return r;
};

/** socket(2); SOCK_CLOEXEC is always added. */
export const sysSocket = (domain: number, type: number, protocol: number, ctx: CallContext = {}): number => {
  const [fd, e] = call(() => libc().socket(domain, type | C.SOCK_CLOEXEC, protocol));
  if (fd < 0) throw syscallError('socket', e, ctx);
  return fd;
};

export const sysBind = (fd: number, addr: Buffer, ctx: CallContext = {}): void => {
  const [r, e] = call(() => libc().bind(fd, addr, addr.length));
  if (r < 0) throw syscallError('bind', e, ctx);
};

export const setsockoptInt = (fd: number, level: number, name: number, value: number, ctx: CallContext = {}): void => {
  const v = Buffer.alloc(4);
  v.writeInt32LE(value, 0);
  const [r, e] = call(() => libc().setsockopt(fd, level, name, v, 4));
  if (r < 0) throw syscallError('setsockopt', e, ctx);
};

/** getsockopt(2) into a buffer of `size` bytes; returns the bytes the kernel filled in. */
export const sysGetsockopt = (fd: number, level: number, name: number, size: number, ctx: CallContext = {}): Buffer => {
  const value = Buffer.alloc(size);
  const len = [size];
  const [r, e] = call(() => libc().getsockopt(fd, level, name, value, len));
  if (r < 0) throw syscallError('getsockopt', e, ctx);
  return value.subarray(0, len[0]);
};

/** recvfrom(2) with the sender's address; null when nothing is queued (EAGAIN). */
export const sysRecvFrom = (fd: number, buf: Buffer, flags: number, addrSize: number, ctx: CallContext = {}): { bytes: number; addr: Buffer } | null => {
  const addr = Buffer.alloc(addrSize);
  const addrLen = [addrSize];
  const [r, e] = call(() => libc().recvfrom(fd, buf, buf.length, flags, addr, addrLen));
  if (r < 0) {
    if (e === EAGAIN) return null;
    throw syscallError('recvfrom', e, ctx);
  }
  return { bytes: r, addr: addr.subarray(0, Math.min(addrSize, addrLen[0] ?? 0)) };
};

// Fill a struct msghdr; the returned array keeps every pointed-to buffer alive until the call returns.
const buildMsghdr = (iov: Buffer[], control: Buffer | null, name: Buffer | null = null): { msg: Buffer; keep: Buffer[] } => {
  const L = LAYOUT;
  const iovecs = Buffer.alloc(Math.max(1, iov.length) * L.iovec.size);
  iov.forEach((b, i) => {
    iovecs.writeBigUInt64LE(b.length > 0 ? K().address(b) : 0n, i * L.iovec.size + L.iovec.base);
    iovecs.writeBigUInt64LE(BigInt(b.length), i * L.iovec.size + L.iovec.len);
  });
  const msg = Buffer.alloc(L.msghdr.size);
  if (name && name.length > 0) {
    msg.writeBigUInt64LE(K().address(name), L.msghdr.name);
    msg.writeUInt32LE(name.length, L.msghdr.namelen);
  }
  msg.writeBigUInt64LE(K().address(iovecs), L.msghdr.iov);
  msg.writeBigUInt64LE(BigInt(iov.length), L.msghdr.iovlen);
  if (control && control.length > 0) {
    msg.writeBigUInt64LE(K().address(control), L.msghdr.control);
    msg.writeBigUInt64LE(BigInt(control.length), L.msghdr.controllen);
  }
  return { msg, keep: [iovecs, ...iov, ...(control ? [control] : []), ...(name ? [name] : [])] };
};

/** sendmsg(2) with optional ancillary data and destination address; null when the socket buffer is full (EAGAIN). */
export const sysSendMsg = (fd: number, iov: Buffer[], control: Buffer | null, flags: number, ctx: CallContext & { to?: Buffer } = {}): number | null => {
  const { msg, keep } = buildMsghdr(iov, control, ctx.to ?? null);
  const [r, e] = call(() => libc().sendmsg(fd, msg, flags));
  keep.length = 0;
  if (r < 0) {
    if (e === EAGAIN) return null;
    throw syscallError('sendmsg', e, ctx);
  }
  return r;
};

export interface RecvMsgResult {
  bytes: number;
  /** The ancillary data the kernel wrote (msg_controllen bytes). */
  control: Buffer;
  /** msg_flags (MSG_CTRUNC, MSG_TRUNC, ...). */
  flags: number;
}

/** recvmsg(2) into `buf` with a control buffer of `controlSize` bytes; null when nothing is queued (EAGAIN). */
export const sysRecvMsg = (fd: number, buf: Buffer, controlSize: number, flags: number, ctx: CallContext = {}): RecvMsgResult | null => {
  const control = Buffer.alloc(controlSize);
  const { msg, keep } = buildMsghdr([buf], control);
  const [r, e] = call(() => libc().recvmsg(fd, msg, flags));
  keep.length = 0;
  if (r < 0) {
    if (e === EAGAIN) return null;
    throw syscallError('recvmsg', e, ctx);
  }
  const controlLen = Number(msg.readBigUInt64LE(LAYOUT.msghdr.controllen));
  return { bytes: r, control: control.subarray(0, Math.min(controlLen, controlSize)), flags: msg.readInt32LE(LAYOUT.msghdr.flags) };
};

/** poll(2) on a set of fds; returns revents per fd. Use timeout 0 on the event loop thread. */
export const sysPoll = (fds: { fd: number; events: number }[], timeoutMs: number, ctx: CallContext = {}): number[] => {
  const P = LAYOUT.pollfd;
  const arr = Buffer.alloc(Math.max(1, fds.length) * P.size);
  fds.forEach(({ fd, events }, i) => {
    arr.writeInt32LE(fd, i * P.size + P.fd);
    arr.writeInt16LE(events, i * P.size + P.events);
  });
  const [r, e] = call(() => libc().poll(arr, fds.length, timeoutMs));
  if (r < 0) throw syscallError('poll', e, ctx);
  return fds.map((_, i) => arr.readInt16LE(i * P.size + P.revents));
};

/** flock(2); false when LOCK_NB was asked and another open file description holds the lock. */
export const sysFlock = (fd: number, op: number, ctx: CallContext = {}): boolean => {
  const [r, e] = call(() => libc().flock(fd, op));
  if (r < 0) {
    if (e === EAGAIN) return false;
    throw syscallError('flock', e, ctx);
  }
  return true;
};

/** fcntl(fd, F_DUPFD_CLOEXEC, 0): a second fd on the same open file (the daemon's own copy). */
export const dupCloexec = (fd: number, ctx: CallContext = {}): number => {
  const [r, e] = call(() => libc().fcntl(fd, C.F_DUPFD_CLOEXEC, 'int', 0));
  if (r < 0) throw syscallError('fcntl(F_DUPFD_CLOEXEC)', e, ctx);
  return r;
};

const hex = (n: number): string => `0x${n.toString(16)}`;
