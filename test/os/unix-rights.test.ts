import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { C, LAYOUT, sysClose, sysOpen } from '../../os/libc.js';
import { decodeRights, encodeRights, peerCredentials, receiveFds, sendFds, stopReading } from '../../os/unix-rights.js';
import { transpileForChild } from '../helpers/child-modules.js';
import { tmpDir } from '../helpers/tmp.js';

// Child processes and watchers start slowly on a loaded 2-core machine: wait generously (no fixed sleeps).
const poll = <T>(fn: () => T) => expect.poll(fn, { timeout: 15_000 });

// A world-readable scratch dir (the uid-65534 child must reach the socket and the modules).
const openDir = (): string => {
  const dir = tmpDir();
  fs.chmodSync(dir, 0o755);
  return dir;
};

const moduleUrl = (dir: string): string => {
  const [entry] = transpileForChild(path.join(dir, 'mod'), ['os/unix-rights.ts']);
  return new URL(`file://${entry}`).href;
};

const listen = async (sock: string, onConnection: (s: net.Socket) => void): Promise<net.Server> => {
  const server = net.createServer(onConnection);
  server.listen(sock);
  await once(server, 'listening');
  fs.chmodSync(sock, 0o777);
  onTestFinished(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return server;
};

const runChild = (script: string, args: string[], options: { uid?: number; gid?: number } = {}): { child: ChildProcess; output: Promise<string> } => {
  const child = spawn(process.execPath, ['--input-type=module', '-e', script, ...args], { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
  onTestFinished(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  const output = new Promise<string>((resolve, reject) =>
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`child exited ${code}: ${err}`)))),
  );
  return { child, output };
};

describe('SCM_RIGHTS control messages', () => {
  it('encodes CMSG_LEN/level/type/fds and decodes them back', () => {
    const buf = encodeRights([3, 7, 42]);
    expect(buf.length).toBe(16 + 16); // CMSG_SPACE(12) = 16 + align8(12)
    expect(Number(buf.readBigUInt64LE(0))).toBe(16 + 12); // CMSG_LEN(12)
    expect(buf.readInt32LE(8)).toBe(C.SOL_SOCKET);
    expect(buf.readInt32LE(12)).toBe(C.SCM_RIGHTS);
    expect(decodeRights(buf)).toEqual([3, 7, 42]);
  });

  it('skips other control messages (SCM_CREDENTIALS) and stops at a length running off the end', () => {
    const creds = Buffer.alloc(16 + 16);
    creds.writeBigUInt64LE(BigInt(LAYOUT.cmsghdr.size + 12), 0);
    creds.writeInt32LE(C.SOL_SOCKET, 8);
    creds.writeInt32LE(C.SCM_CREDENTIALS, 12);
    creds.writeInt32LE(5, 16); // would look like an fd if the type were not checked
    const rights = encodeRights([9]);
    expect(decodeRights(Buffer.concat([creds, rights]))).toEqual([9]);
    const broken = Buffer.from(rights);
    broken.writeBigUInt64LE(4096n, 0);
    expect(decodeRights(broken)).toEqual([]);
    expect(decodeRights(Buffer.alloc(0))).toEqual([]);
  });
});

describe('peer credentials (SO_PEERCRED)', () => {
  it("returns the connecting process's real pid and uid/gid, also for an unprivileged peer", async () => {
    const dir = openDir();
    const sock = path.join(dir, 's');
    const seen: { pid: number; uid: number; gid: number }[] = [];
    await listen(sock, (s) => {
      seen.push(peerCredentials(s));
      s.end('bye');
    });
    const client = `import net from 'node:net'; const s = net.connect(process.argv[1]); s.on('data', () => {}); s.on('end', () => process.exit(0));`;
    const root = runChild(client, [sock]);
    await root.output;
    const nobody = runChild(client, [sock], { uid: 65534, gid: 65534 });
    await nobody.output;
    expect(seen).toEqual([
      { pid: root.child.pid, uid: process.getuid!(), gid: process.getgid!() },
      { pid: nobody.child.pid, uid: 65534, gid: 65534 },
    ]);
  });

  it('works from the client side too: the child sees the server process', async () => {
    const dir = openDir();
    const sock = path.join(dir, 's');
    await listen(sock, (s) => s.on('data', () => s.end()));
    const script = `import net from 'node:net'; const { peerCredentials } = await import(process.argv[2]);
      const s = net.connect(process.argv[1], () => { console.log(JSON.stringify(peerCredentials(s))); s.end('x'); });`;
    const { output } = runChild(script, [sock, moduleUrl(dir)]);
    expect(JSON.parse(await output)).toEqual({ pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
  });
});

describe('fd hand-off between two processes', () => {
  it('the receiver reads, through the passed fd, a file the sender opened and then deleted', async () => {
    const dir = openDir();
    const sock = path.join(dir, 's');
    const secret = `secret-${process.pid}-${Date.now()}`;
    const received = new Promise<{ payload: Buffer; fds: number[] }>((resolve, reject) => {
      void listen(sock, (s) => {
        // Stop libuv reading before the peer may send; then tell it to go.
        stopReading(s);
        s.write('R');
        receiveFds(s)
          .then(resolve, reject)
          .finally(() => s.destroy());
      });
    });
    await poll(() => fs.existsSync(sock)).toBe(true);
    const sender = `import fs from 'node:fs'; import net from 'node:net'; const { sendFds } = await import(process.argv[2]);
      const file = process.argv[3];
      fs.writeFileSync(file, process.argv[4]);
      const fd = fs.openSync(file, 'r');
      fs.unlinkSync(file); // only the fd can reach the content now
      const s = net.connect(process.argv[1]);
      s.once('data', async () => { await sendFds(s, [fd], Buffer.from(JSON.stringify({ from: process.pid }))); s.end(); });`;
    const { child, output } = runChild(sender, [sock, moduleUrl(dir), path.join(dir, 'secret.txt'), secret]);
    const { payload, fds } = await received;
    await output;
    expect(JSON.parse(payload.toString())).toEqual({ from: child.pid });
    expect(fds).toHaveLength(1);
    expect(fs.existsSync(path.join(dir, 'secret.txt'))).toBe(false);
    const buf = Buffer.alloc(200);
    const n = fs.readSync(fds[0]!, buf, 0, 200, 0);
    expect(buf.subarray(0, n).toString()).toBe(secret);
    fs.closeSync(fds[0]!);
  });

  it('the daemon side sends several fds and a payload larger than the socket buffer; it keeps its own copies', async () => {
    const dir = openDir();
    const sock = path.join(dir, 's');
    const files = ['a', 'b', 'c'].map((n) => {
      const f = path.join(dir, n);
      fs.writeFileSync(f, `content of ${n}`);
      return f;
    });
    const fds = files.map((f) => sysOpen(f, C.O_RDONLY));
    onTestFinished(() => {
      for (const fd of fds) sysClose(fd);
    });
    const big = Buffer.alloc(600_000, 'z'); // bigger than the default unix socket buffer: short writes
    const sent = new Promise<void>((resolve, reject) => {
      void listen(sock, (s) => {
        s.once('data', () => {
          sendFds(s, fds, big).then(() => {
            s.end();
            resolve();
          }, reject);
        });
      });
    });
    await poll(() => fs.existsSync(sock)).toBe(true);
    const receiver = `import fs from 'node:fs'; import net from 'node:net'; const { receiveFds, stopReading } = await import(process.argv[2]);
      const s = net.connect(process.argv[1], async () => {
        stopReading(s); s.write('R');
        const { payload, fds } = await receiveFds(s);
        const texts = fds.map((fd) => { const b = Buffer.alloc(100); return b.subarray(0, fs.readSync(fd, b, 0, 100, 0)).toString(); });
        console.log(JSON.stringify({ bytes: payload.length, allZ: payload.every((c) => c === 0x7a), texts }));
        s.destroy();
      });`;
    const { output } = runChild(receiver, [sock, moduleUrl(dir)]);
    await sent;
    expect(JSON.parse(await output)).toEqual({ bytes: big.length, allZ: true, texts: ['content of a', 'content of b', 'content of c'] });
    // The sender's fds are still open and usable (the kernel duplicated them into the peer).
    const b = Buffer.alloc(50);
    expect(b.subarray(0, fs.readSync(fds[1]!, b, 0, 50, 0)).toString()).toBe('content of b');
  });

  it('a peer that closes before sending gives a typed error, not a hang', async () => {
    const dir = openDir();
    const sock = path.join(dir, 's');
    const result = new Promise<unknown>((resolve) => {
      void listen(sock, (s) => {
        stopReading(s);
        receiveFds(s)
          .then(resolve, resolve)
          .finally(() => s.destroy());
      });
    });
    await poll(() => fs.existsSync(sock)).toBe(true);
    // The child half-closes and exits once the server side closes too.
    const { output } = runChild(`import net from 'node:net'; const s = net.connect(process.argv[1], () => s.end()); s.resume();`, [sock]);
    expect(await result).toMatchObject({ code: 'E_DAEMON', message: expect.stringContaining('closed') });
    await output;
  });
});
