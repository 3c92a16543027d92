// File-descriptor hand-off (SCM_RIGHTS) and peer credentials (SO_PEERCRED) on unix sockets.
//
// Node cannot do either: net.Socket has no sendmsg/recvmsg with ancillary data and no getsockopt. The
// approach here: take the kernel fd of a connected net.Socket from its libuv handle
// (`socket._handle.fd`, a Pipe handle on a unix socket), and call sendmsg/recvmsg/getsockopt on it
// through koffi (sysfs/libc.ts). Two rules keep this safe next to libuv, which owns the same fd:
// - sending: only when Node's own write queue is empty (socket.writableLength === 0), so our bytes
//   cannot overtake bytes Node has buffered; the socket is non-blocking, EAGAIN is retried on a timer.
// - receiving: stop libuv reading first (handle.readStop()), or libuv's plain read() would consume the
//   message and the kernel would silently close the passed fds. The peer must not send the fd-bearing
//   message before we have stopped reading: the protocol makes it wait for a "ready" byte from us.
// A message is framed as u32 little-endian length + payload, sent in one sendmsg with the fds attached
// to its first byte. Received fds are opened with MSG_CMSG_CLOEXEC and belong to the caller.
import type * as net from 'node:net';
import { IsogroupError } from '../errors.js';
import { C, LAYOUT, sysClose, sysGetsockopt, sysRecvMsg, sysSendMsg } from './libc.js';

export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

/** Most fds one message may carry (the kernel's SCM_MAX_FD is 253). */
export const MAX_FDS = 253;
const MAX_FRAME = 1 << 20;

interface PipeHandle {
  fd?: number;
  reading?: boolean;
  readStop?: () => number;
  readStart?: () => number;
}

const handleOf = (socket: net.Socket): PipeHandle | null => (socket as unknown as { _handle?: PipeHandle | null })._handle ?? null;

/** The kernel fd behind a connected net.Socket (libuv keeps owning it: never close it). */
export const socketFd = (socket: net.Socket): number => {
  const fd = handleOf(socket)?.fd;
  if (typeof fd !== 'number' || fd < 0) {
    throw new IsogroupError('E_INTERNAL', 'socket has no file descriptor (not connected, destroyed, or not a libuv pipe/tcp handle)', {});
  }
  return fd;
};

/** SO_PEERCRED: the pid/uid/gid the kernel recorded for the peer when it connected. */
export const peerCredentials = (socket: net.Socket | number): PeerCredentials => {
  const fd = typeof socket === 'number' ? socket : socketFd(socket);
  const ucred = sysGetsockopt(fd, C.SOL_SOCKET, C.SO_PEERCRED, 12, { code: 'E_DAEMON', what: 'reading peer credentials' });
  if (ucred.length < 12) throw new IsogroupError('E_INTERNAL', `SO_PEERCRED returned ${ucred.length} bytes, expected 12`, {});
  return { pid: ucred.readInt32LE(0), uid: ucred.readUInt32LE(4), gid: ucred.readUInt32LE(8) };
};

const align8 = (n: number): number => (n + 7) & ~7;
/** CMSG_SPACE(n) on LP64. */
export const cmsgSpace = (dataLen: number): number => LAYOUT.cmsghdr.size + align8(dataLen);

/** One SCM_RIGHTS control message carrying `fds`. */
export const encodeRights = (fds: number[]): Buffer => {
  if (fds.length === 0) return Buffer.alloc(0);
  if (fds.length > MAX_FDS) throw new IsogroupError('E_INVALID_INPUT', `cannot pass ${fds.length} fds in one message (at most ${MAX_FDS})`, {});
  const H = LAYOUT.cmsghdr;
  const buf = Buffer.alloc(cmsgSpace(4 * fds.length));
  buf.writeBigUInt64LE(BigInt(H.size + 4 * fds.length), H.len); // CMSG_LEN
  buf.writeInt32LE(C.SOL_SOCKET, H.level);
  buf.writeInt32LE(C.SCM_RIGHTS, H.type);
  fds.forEach((fd, i) => {
    buf.writeInt32LE(fd, H.size + 4 * i);
  });
  return buf;
};

/** Every fd carried by SCM_RIGHTS messages in a control buffer (other message types are skipped). */
export const decodeRights = (control: Buffer): number[] => {
  const H = LAYOUT.cmsghdr;
  const fds: number[] = [];
  let off = 0;
  while (off + H.size <= control.length) {
    const len = Number(control.readBigUInt64LE(off + H.len));
    if (len < H.size || off + len > control.length) break;
    if (control.readInt32LE(off + H.level) === C.SOL_SOCKET && control.readInt32LE(off + H.type) === C.SCM_RIGHTS) {
      for (let p = off + H.size; p + 4 <= off + len; p += 4) fds.push(control.readInt32LE(p));
    }
    off += align8(len);
  }
  return fds;
};

const frame = (payload: Buffer): Buffer => {
  if (payload.length > MAX_FRAME) throw new IsogroupError('E_INVALID_INPUT', `hand-off payload of ${payload.length} bytes exceeds ${MAX_FRAME}`, {});
  const out = Buffer.alloc(4 + payload.length);
  out.writeUInt32LE(payload.length, 0);
  payload.copy(out, 4);
  return out;
};

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

// Back-off for retrying non-blocking calls on a timer: 1, 2, 4 ... 20 ms.
const nextDelay = (d: number): number => Math.min(20, d * 2);

export interface TransferOptions {
  /** Give up after this many ms (default 10 s). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/**
 * Send `payload` with `fds` attached over a connected unix stream socket. The fds stay open here (the
 * kernel duplicates them into the peer), so the daemon keeps its own copies.
 */
export const sendFds = async (socket: net.Socket, fds: number[], payload: Buffer, options: TransferOptions = {}): Promise<void> => {
  const deadline = Date.now() + (options.timeoutMs ?? 10_000);
  // Never overtake bytes Node still holds in its own write queue.
  while (socket.writableLength > 0) {
    if (socket.destroyed) throw new IsogroupError('E_DAEMON', 'socket closed before the fds were sent', {});
    await new Promise<void>((resolve) => {
      const done = () => {
        socket.off('drain', done);
        socket.off('close', done);
        resolve();
      };
      socket.once('drain', done);
      socket.once('close', done);
    });
  }
  const fd = socketFd(socket);
  let data = frame(payload);
  let control: Buffer | null = encodeRights(fds);
  let delay = 1;
  while (data.length > 0) {
    options.signal?.throwIfAborted();
    const sent = sysSendMsg(fd, [data], control, C.MSG_NOSIGNAL | C.MSG_DONTWAIT, { code: 'E_DAEMON', what: 'sending fds' });
    if (sent === null) {
      if (Date.now() > deadline) throw new IsogroupError('E_DAEMON', 'timed out sending fds: the peer does not read', {});
      await sleep(delay);
      delay = nextDelay(delay);
      continue;
    }
    // The fds travel with the first byte; the rest of a short write goes without them.
    control = null;
    data = data.subarray(sent);
    delay = 1;
  }
};

/** Stop libuv reading from the socket so recvmsg below sees every byte and every fd. */
export const stopReading = (socket: net.Socket): void => {
  const handle = handleOf(socket);
  if (!handle || typeof handle.readStop !== 'function') throw new IsogroupError('E_INTERNAL', 'socket handle cannot stop reading', {});
  socket.pause();
  handle.reading = false;
  handle.readStop();
};

/** Undo stopReading: hand the socket back to libuv (Node's stream machinery will not restart it by itself). */
export const resumeReading = (socket: net.Socket): void => {
  const handle = handleOf(socket);
  if (!handle || typeof handle.readStart !== 'function') throw new IsogroupError('E_INTERNAL', 'socket handle cannot start reading', {});
  handle.reading = true;
  handle.readStart();
  socket.resume();
};

export interface ReceivedFds {
  payload: Buffer;
  fds: number[];
}

/**
 * Receive one framed message and its fds. Call stopReading(socket) before the peer can send it.
 * Polls the non-blocking socket on a timer, so the event loop is never blocked.
 */
export const receiveFds = async (socket: net.Socket, options: TransferOptions & { maxFds?: number } = {}): Promise<ReceivedFds> => {
  const deadline = Date.now() + (options.timeoutMs ?? 10_000);
  const fd = socketFd(socket);
  const controlSize = cmsgSpace(4 * (options.maxFds ?? MAX_FDS));
  const fds: number[] = [];
  const chunks: Buffer[] = [];
  let have = 0;
  let need = -1;
  let delay = 1;
  const fail = (error: IsogroupError): never => {
    for (const f of fds) sysClose(f);
    throw error;
  };
  while (need < 0 || have < need + 4) {
    if (options.signal?.aborted) fail(new IsogroupError('E_DAEMON', 'receiving fds aborted', {}));
    const want = need < 0 ? 4 - have : need + 4 - have;
    const buf = Buffer.alloc(Math.max(1, want));
    let got: ReturnType<typeof sysRecvMsg>;
    try {
      got = sysRecvMsg(fd, buf, controlSize, C.MSG_DONTWAIT | C.MSG_CMSG_CLOEXEC, { code: 'E_DAEMON', what: 'receiving fds' });
    } catch (error) {
      return fail(error as IsogroupError);
    }
    if (got === null) {
      if (Date.now() > deadline) fail(new IsogroupError('E_DAEMON', 'timed out waiting for fds', {}));
      await sleep(delay);
      delay = nextDelay(delay);
      continue;
    }
    fds.push(...decodeRights(got.control));
    if (got.flags & C.MSG_CTRUNC) fail(new IsogroupError('E_DAEMON', 'more fds arrived than expected; ancillary data truncated', { maxFds: options.maxFds }));
    if (got.bytes === 0) fail(new IsogroupError('E_DAEMON', 'peer closed the socket before the message was complete', { received: have }));
    chunks.push(buf.subarray(0, got.bytes));
    have += got.bytes;
    delay = 1;
    if (need < 0 && have >= 4) {
      need = Buffer.concat(chunks).readUInt32LE(0);
      if (need > MAX_FRAME) fail(new IsogroupError('E_DAEMON', `hand-off frame of ${need} bytes exceeds ${MAX_FRAME}`, {}));
    }
  }
  return { payload: Buffer.concat(chunks).subarray(4, 4 + need), fds };
};
