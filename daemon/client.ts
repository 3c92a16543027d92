// Client for the daemon's unix-socket API, used by the CLI: JSON requests with the daemon's typed
// errors turned back into IsogroupError (same code, so the CLI exits the same way whether it went
// through the daemon or not), an SSE reader for GET /events, and fd hand-off (SCM_RIGHTS).
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import { IsogroupError, isErrorCode } from '../errors.js';
import { receiveFds, stopReading } from '../os/unix-rights.js';
import { FD_READY, FD_UPGRADE } from './http-unix.js';

export interface ClientOptions {
  /** Per-request timeout (default 60 s: an assign can take a while on a big group). */
  timeoutMs?: number;
}

export interface SseEvent {
  id: string | null;
  event: string;
  data: string;
}

/** Incremental text/event-stream parser (the WHATWG rules the daemon's frames need). */
export class SseParser {
  private pending = '';
  private id: string | null = null;
  private event = '';
  private data: string[] = [];

  push(chunk: string): SseEvent[] {
    this.pending += chunk;
    const out: SseEvent[] = [];
    let nl: number;
    while ((nl = this.pending.search(/\r\n|\n|\r/)) >= 0) {
      const line = this.pending.slice(0, nl);
      this.pending = this.pending.slice(nl + (this.pending.startsWith('\r\n', nl) ? 2 : 1));
      if (line === '') {
        if (this.data.length > 0) out.push({ id: this.id, event: this.event || 'message', data: this.data.join('\n') });
        this.event = '';
        this.data = [];
        continue;
      }
      if (line.startsWith(':')) continue; // comment / heartbeat
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'data') this.data.push(value);
      else if (field === 'event') this.event = value;
      else if (field === 'id') this.id = value;
    }
    return out;
  }
}

// A daemon error body back into the typed error it was.
const errorFromBody = (status: number, text: string, where: string): IsogroupError => {
  try {
    const parsed = JSON.parse(text) as { error?: { code?: unknown; message?: unknown; details?: unknown } };
    const e = parsed.error;
    if (e && isErrorCode(e.code)) {
      const details = typeof e.details === 'object' && e.details !== null ? (e.details as Record<string, unknown>) : {};
      return new IsogroupError(e.code, String(e.message ?? e.code), { ...details, status, via: 'daemon' });
    }
  } catch {
    // not JSON: fall through
  }
  return new IsogroupError('E_DAEMON', `${where}: daemon answered HTTP ${status}: ${text.slice(0, 200)}`, { status });
};

export class DaemonClient {
  private readonly timeoutMs: number;

  constructor(
    readonly socketPath: string,
    options: ClientOptions = {},
  ) {
    this.timeoutMs = options.timeoutMs ?? 60_000;
  }

  /** True when something accepts connections on the socket (the CLI's "go through the daemon" test). */
  async isRunning(): Promise<boolean> {
    if (!fs.existsSync(this.socketPath)) return false;
    return new Promise<boolean>((resolve) => {
      const probe = net.connect(this.socketPath);
      probe.once('connect', () => {
        probe.destroy();
        resolve(true);
      });
      probe.once('error', () => resolve(false));
    });
  }

  private connectError(error: NodeJS.ErrnoException, where: string): IsogroupError {
    const errno = error.code;
    if (errno === 'EACCES' || errno === 'EPERM') {
      return new IsogroupError(
        'E_PERMISSION',
        `${where}: no permission to use the daemon socket ${this.socketPath}`,
        { socket: this.socketPath, errno },
        { cause: error },
      );
    }
    if (errno === 'ENOENT' || errno === 'ECONNREFUSED') {
      return new IsogroupError('E_DAEMON', `${where}: no daemon listening on ${this.socketPath}`, { socket: this.socketPath, errno }, { cause: error });
    }
    return new IsogroupError('E_DAEMON', `${where}: ${error.message}`, { socket: this.socketPath, errno }, { cause: error });
  }

  /** One JSON request; resolves with the parsed body, throws the daemon's typed error. */
  request<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
    const where = `${method} ${path}`;
    const payload = body === undefined ? null : JSON.stringify(body, (_k, v: unknown) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v));
    return new Promise<T>((resolve, reject) => {
      const req = http.request(
        {
          socketPath: this.socketPath,
          method,
          path,
          headers: payload === null ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
          timeout: this.timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', (e) => reject(this.connectError(e, where)));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            const status = res.statusCode ?? 0;
            if (status < 200 || status >= 300) return reject(errorFromBody(status, text, where));
            try {
              resolve((text.trim() === '' ? undefined : JSON.parse(text)) as T);
            } catch {
              reject(new IsogroupError('E_DAEMON', `${where}: daemon answered with invalid JSON`, { status }));
            }
          });
        },
      );
      req.on('timeout', () =>
        req.destroy(new IsogroupError('E_DAEMON', `${where}: no answer from the daemon within ${this.timeoutMs} ms`, { socket: this.socketPath })),
      );
      req.on('error', (e: NodeJS.ErrnoException) => reject(e instanceof IsogroupError ? e : this.connectError(e, where)));
      req.end(payload ?? undefined);
    });
  }

  get<T = unknown>(path: string): Promise<T> {
    return this.request<T>('GET', path);
  }

  post<T = unknown>(path: string, body?: unknown): Promise<T> {
    return this.request<T>('POST', path, body ?? {});
  }

  /**
   * Ask an fd route for file descriptors (SCM_RIGHTS). The fds are open in this process (close-on-exec)
   * and belong to the caller.
   */
  requestFds<T = unknown>(method: string, path: string): Promise<{ body: T; fds: number[] }> {
    const where = `${method} ${path}`;
    return new Promise((resolve, reject) => {
      const req = http.request({ socketPath: this.socketPath, method, path, headers: { connection: 'upgrade', upgrade: FD_UPGRADE }, timeout: this.timeoutMs });
      req.on('upgrade', (_res, socket: net.Socket) => {
        try {
          // Stop libuv reading before the daemon may send: the fds must reach recvmsg, not read().
          stopReading(socket);
          socket.write(FD_READY);
        } catch (error) {
          socket.destroy();
          reject(error);
          return;
        }
        receiveFds(socket, { timeoutMs: this.timeoutMs })
          .then(({ payload, fds }) => {
            socket.destroy();
            resolve({ body: JSON.parse(payload.toString('utf8')) as T, fds });
          })
          .catch((error: unknown) => {
            socket.destroy();
            reject(error);
          });
      });
      // A refusal comes back as an ordinary HTTP error response.
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => reject(errorFromBody(res.statusCode ?? 0, Buffer.concat(chunks).toString('utf8'), where)));
      });
      req.on('timeout', () => req.destroy(new IsogroupError('E_DAEMON', `${where}: no answer from the daemon within ${this.timeoutMs} ms`, {})));
      req.on('error', (e: NodeJS.ErrnoException) => reject(e instanceof IsogroupError ? e : this.connectError(e, where)));
      req.end();
    });
  }

  /**
   * Read the event stream. Ends when the daemon closes it or `signal` aborts. `lastEventId` resumes
   * after an event already seen.
   */
  async *events(options: { path?: string; types?: string[]; lastEventId?: number; signal?: AbortSignal } = {}): AsyncGenerator<SseEvent & { json: unknown }> {
    const query = options.types?.length ? `?types=${encodeURIComponent(options.types.join(','))}` : '';
    const path = `${options.path ?? '/events'}${query}`;
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const headers: Record<string, string> = { accept: 'text/event-stream' };
      if (options.lastEventId !== undefined) headers['last-event-id'] = String(options.lastEventId);
      const req = http.request({ socketPath: this.socketPath, method: 'GET', path, headers, signal: options.signal }, (r) => {
        if ((r.statusCode ?? 0) !== 200) {
          const chunks: Buffer[] = [];
          r.on('data', (c: Buffer) => chunks.push(c));
          r.on('end', () => reject(errorFromBody(r.statusCode ?? 0, Buffer.concat(chunks).toString('utf8'), `GET ${path}`)));
          return;
        }
        resolve(r);
      });
      req.on('error', (e: NodeJS.ErrnoException) => reject(e.name === 'AbortError' ? e : this.connectError(e, `GET ${path}`)));
      req.end();
    });
    const parser = new SseParser();
    res.setEncoding('utf8');
    try {
      for await (const chunk of res) {
        for (const e of parser.push(chunk as string)) {
          let json: unknown = null;
          try {
            json = JSON.parse(e.data);
          } catch {
            json = null;
          }
          yield { ...e, json };
        }
      }
    } catch (error) {
      if ((error as Error).name === 'AbortError' || options.signal?.aborted) return;
      throw new IsogroupError('E_DAEMON', `event stream broke: ${(error as Error).message}`, {}, { cause: error });
    } finally {
      res.destroy();
    }
  }
}
