import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { DaemonClient } from '../../daemon/client.js';
import { reply, UnixHttpServer } from '../../daemon/http-unix.js';
import { IsogroupError } from '../../errors.js';
import { C, sysClose, sysOpen } from '../../os/libc.js';
import { transpileForChild } from '../helpers/child-modules.js';
import { tmpDir } from '../helpers/tmp.js';

const poll = <T>(fn: () => T) => expect.poll(fn, { timeout: 15_000 });

const openDir = (): string => {
  const dir = tmpDir();
  fs.chmodSync(dir, 0o755);
  return dir;
};

const startServer = async (dir: string, mode?: number) => {
  const server = new UnixHttpServer();
  server
    .route('GET', '/status', () => ({ groups: [] }))
    .route('GET', '/whoami', (ctx) => ({ peer: ctx.peer }))
    .route('GET', '/devices/:bdf', (ctx) => ({ bdf: ctx.params.bdf }))
    .route('POST', '/groups/:group/assign', (ctx) => reply(201, { group: ctx.params.group, body: ctx.body, iova: 0xfedfffffn }))
    .route('GET', '/busy', () => {
      throw new IsogroupError('E_GROUP_BUSY', 'group 7 is being assigned', { group: '7' });
    })
    .route('GET', '/boom', () => {
      throw new Error('secret internal detail');
    });
  const sock = path.join(dir, 'isogroup.sock');
  await server.listen(sock, mode === undefined ? {} : { mode });
  onTestFinished(() => server.close());
  return { server, sock, client: new DaemonClient(sock) };
};

// A raw request, to send what the client library never would (malformed JSON).
const raw = (
  sock: string,
  method: string,
  p: string,
  body?: string,
): Promise<{
  status: number;
  json: { error: { code: string; message: string; details: Record<string, unknown> } } & Record<string, unknown>;
  headers: http.IncomingHttpHeaders;
}> =>
  new Promise((resolve, reject) => {
    const req = http.request({ socketPath: sock, method, path: p, headers: body === undefined ? {} : { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode!, json: JSON.parse(text), headers: res.headers }));
    });
    req.on('error', reject);
    req.end(body);
  });

const childOutput = (script: string, args: string[], options: { uid?: number; gid?: number } = {}): Promise<string> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, ...args], { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`child exited ${code}: ${err}`))));
  });

describe('HTTP+JSON on a unix socket', () => {
  it('creates the socket with mode 0660 and answers JSON routes (bigint as hex)', async () => {
    const { sock, client } = await startServer(openDir());
    expect(fs.statSync(sock).mode & 0o777).toBe(0o660);
    expect(fs.statSync(sock).isSocket()).toBe(true);
    expect(await client.get('/status')).toEqual({ groups: [] });
    expect(await client.get('/devices/0000:0A:04.0')).toEqual({ bdf: '0000:0a:04.0' });
    expect(await client.post('/groups/7/assign', { to: 'alice' })).toEqual({ group: '7', body: { to: 'alice' }, iova: '0xfedfffff' });
  });

  it('bad requests get 4xx with a typed error body', async () => {
    const { sock, client } = await startServer(openDir());
    const unknown = await raw(sock, 'GET', '/nope');
    expect(unknown.status).toBe(404);
    expect(unknown.json).toEqual({ error: { code: 'E_NO_ROUTE', message: 'no API route GET /nope', details: { method: 'GET', path: '/nope' } } });

    const wrongMethod = await raw(sock, 'DELETE', '/status');
    expect(wrongMethod.status).toBe(405);
    expect(wrongMethod.headers.allow).toBe('GET');
    expect(wrongMethod.json.error.code).toBe('E_NO_ROUTE');

    const malformed = await raw(sock, 'POST', '/groups/7/assign', '{"to": "alice"');
    expect(malformed.status).toBe(400);
    expect(malformed.json.error).toMatchObject({ code: 'E_INVALID_INPUT', message: expect.stringContaining('not valid JSON') });

    for (const bad of ['/devices/zz:zz', '/devices/..%2F..%2Fetc', '/devices/0000:00:20.0']) {
      const r = await raw(sock, 'GET', bad);
      expect(r.status, bad).toBe(400);
      expect(r.json.error.code, bad).toBe('E_INVALID_BDF');
    }
    const badGroup = await raw(sock, 'POST', '/groups/seven/assign', '{}');
    expect(badGroup.status).toBe(400);
    expect(badGroup.json.error.code).toBe('E_USAGE');

    const tooBig = await raw(sock, 'POST', '/groups/7/assign', JSON.stringify({ x: 'y'.repeat(2 << 20) }));
    expect(tooBig.status).toBe(413);

    // The client turns them back into the same typed errors (so the CLI exits the same way).
    await expect(client.get('/nope')).rejects.toMatchObject({ code: 'E_NO_ROUTE', details: { status: 404, via: 'daemon' } });
    await expect(client.get('/busy')).rejects.toMatchObject({
      code: 'E_GROUP_BUSY',
      message: 'group 7 is being assigned',
      details: { group: '7', status: 409 },
    });
    await expect(client.get('/devices/nonsense')).rejects.toMatchObject({ code: 'E_INVALID_BDF' });
  });

  it('an unexpected exception is a 500 E_INTERNAL that does not leak its message', async () => {
    const { sock } = await startServer(openDir());
    const r = await raw(sock, 'GET', '/boom');
    expect(r.status).toBe(500);
    expect(r.json.error.code).toBe('E_INTERNAL');
    expect(JSON.stringify(r.json)).not.toContain('secret');
  });

  it("gives handlers the connecting process's kernel credentials (SO_PEERCRED)", async () => {
    const dir = openDir();
    const { client, sock } = await startServer(dir, 0o666);
    expect(await client.get('/whoami')).toEqual({ peer: { pid: process.pid, uid: process.getuid!(), gid: process.getgid!() } });
    const script = `import http from 'node:http';
      http.get({ socketPath: process.argv[1], path: '/whoami' }, (res) => { let t = ''; res.on('data', (d) => (t += d)); res.on('end', () => console.log(JSON.stringify({ me: process.pid, ...JSON.parse(t) }))); });`;
    const seen = JSON.parse(await childOutput(script, [sock], { uid: 65534, gid: 65534 }));
    expect(seen.peer).toEqual({ pid: seen.me, uid: 65534, gid: 65534 });
  });

  it('mode 0660 keeps other users out: the client reports E_PERMISSION', async () => {
    const dir = openDir();
    const { sock } = await startServer(dir);
    const [entry] = transpileForChild(path.join(dir, 'mod'), ['daemon/client.ts']);
    const script = `const { DaemonClient } = await import(process.argv[2]);
      try { await new DaemonClient(process.argv[1]).get('/status'); console.log('"connected"'); } catch (e) { console.log(JSON.stringify({ code: e.code, errno: e.details.errno })); }`;
    expect(JSON.parse(await childOutput(script, [sock, entry!], { uid: 65534, gid: 65534 }))).toEqual({ code: 'E_PERMISSION', errno: 'EACCES' });
  });

  it('no daemon: E_DAEMON naming the socket; isRunning() is false', async () => {
    const client = new DaemonClient(path.join(tmpDir(), 'absent.sock'));
    await expect(client.get('/status')).rejects.toMatchObject({ code: 'E_DAEMON', details: { errno: 'ENOENT' } });
    expect(await client.isRunning()).toBe(false);
  });

  it('replaces a stale socket, refuses a live daemon and a non-socket file, removes its socket on close', async () => {
    const dir = openDir();
    const sock = path.join(dir, 'isogroup.sock');
    // A daemon killed with SIGKILL leaves its socket file behind.
    const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(process.argv[1], () => console.log('up'))`, sock], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    await new Promise((resolve) => child.stdout.once('data', resolve));
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('close', resolve));
    expect(fs.existsSync(sock)).toBe(true);

    const first = new UnixHttpServer().route('GET', '/status', () => ({ ok: 1 }));
    await first.listen(sock);
    expect(await new DaemonClient(sock).get('/status')).toEqual({ ok: 1 });
    expect(await new DaemonClient(sock).isRunning()).toBe(true);
    await expect(new UnixHttpServer().listen(sock)).rejects.toMatchObject({ code: 'E_DAEMON', message: expect.stringContaining('already listening') });
    await first.close();
    expect(fs.existsSync(sock)).toBe(false);

    const file = path.join(dir, 'not-a-socket');
    fs.writeFileSync(file, 'keep me');
    await expect(new UnixHttpServer().listen(file)).rejects.toMatchObject({ code: 'E_DAEMON', message: expect.stringContaining('not a socket') });
    expect(fs.readFileSync(file, 'utf8')).toBe('keep me');
  });
});

describe('fd hand-off route (SCM_RIGHTS over an HTTP upgrade)', () => {
  it('an allowed peer receives the fds and reads through them; a refused peer gets a typed 403', async () => {
    const dir = openDir();
    const file = path.join(dir, 'container');
    fs.writeFileSync(file, 'the container fd');
    const held = sysOpen(file, C.O_RDONLY);
    onTestFinished(() => sysClose(held));
    const server = new UnixHttpServer().fdRoute('POST', '/contexts/:owner/fds', (ctx) => {
      if (ctx.peer?.uid !== 0)
        throw new IsogroupError('E_POLICY_DENIED', `uid ${ctx.peer?.uid} may not take the fds of ${ctx.params.owner}`, { uid: ctx.peer?.uid });
      return { fds: [held], body: { owner: ctx.params.owner, fds: ['container'] } };
    });
    const sock = path.join(dir, 'isogroup.sock');
    await server.listen(sock, { mode: 0o666 });
    onTestFinished(() => server.close());
    const [entry] = transpileForChild(path.join(dir, 'mod'), ['daemon/client.ts']);
    const script = `import fs from 'node:fs'; const { DaemonClient } = await import(process.argv[2]);
      try {
        const { body, fds } = await new DaemonClient(process.argv[1]).requestFds('POST', '/contexts/alice/fds');
        const b = Buffer.alloc(100);
        console.log(JSON.stringify({ body, text: b.subarray(0, fs.readSync(fds[0], b, 0, 100, 0)).toString() }));
      } catch (e) { console.log(JSON.stringify({ code: e.code, status: e.details.status })); }`;
    expect(JSON.parse(await childOutput(script, [sock, entry!]))).toEqual({ body: { owner: 'alice', fds: ['container'] }, text: 'the container fd' });
    expect(JSON.parse(await childOutput(script, [sock, entry!], { uid: 65534, gid: 65534 }))).toEqual({ code: 'E_POLICY_DENIED', status: 403 });
    // The daemon's own copy stays open.
    const b = Buffer.alloc(100);
    expect(b.subarray(0, fs.readSync(held, b, 0, 100, 0)).toString()).toBe('the container fd');
    // An unknown fd route is a typed 404 too.
    await expect(new DaemonClient(sock).requestFds('POST', '/nope')).rejects.toMatchObject({ code: 'E_NO_ROUTE', details: { status: 404 } });
  });

  it('the handler may close its fds right after returning: the server sends its own duplicates', async () => {
    const dir = openDir();
    fs.writeFileSync(path.join(dir, 'right'), 'the right file');
    fs.writeFileSync(path.join(dir, 'wrong'), 'an unrelated file');
    let released = 0;
    const server = new UnixHttpServer().fdRoute('POST', '/fds', () => {
      const temp = sysOpen(path.join(dir, 'right'), C.O_RDONLY);
      // Close it on the next turn and let the number be reused by another file at once.
      setImmediate(() => {
        sysClose(temp);
        const reuse = sysOpen(path.join(dir, 'wrong'), C.O_RDONLY);
        onTestFinished(() => sysClose(reuse));
      });
      return { fds: [temp], body: {}, release: () => (released += 1) };
    });
    const sock = path.join(dir, 'isogroup.sock');
    await server.listen(sock);
    onTestFinished(() => server.close());
    const [entry] = transpileForChild(path.join(dir, 'mod'), ['daemon/client.ts']);
    const script = `import fs from 'node:fs'; const { DaemonClient } = await import(process.argv[2]);
      const { fds } = await new DaemonClient(process.argv[1]).requestFds('POST', '/fds');
      const b = Buffer.alloc(100); console.log(JSON.stringify(b.subarray(0, fs.readSync(fds[0], b, 0, 100, 0)).toString()));`;
    expect(JSON.parse(await childOutput(script, [sock, entry!]))).toBe('the right file');
    await poll(() => released).toBe(1);
  });
});
