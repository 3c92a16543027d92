// A small HTTP+JSON server on a unix socket for the daemon API.
// - Routes: method + pattern ('/groups/:group', '/devices/:bdf'). Parameters named `bdf` go through
//   parseBdf and `group` must be a group number, so handlers only ever see validated values.
// - Errors are typed JSON, {error:{code,message,details}}, with an HTTP status derived from the code:
//   unknown route 404 E_NO_ROUTE, wrong method 405, malformed JSON 400 E_INVALID_INPUT, bad BDF 400
//   E_INVALID_BDF, busy 409, denied 403, anything unexpected 500 E_INTERNAL (logged, not leaked).
// - Every connection's peer credentials (SO_PEERCRED: pid, uid, gid as the kernel recorded them at
//   connect) are read once and given to handlers; this is the authentication of the API.
// - fd hand-off routes (fdRoute) run over an HTTP upgrade: the handler's fds travel with SCM_RIGHTS
//   (sysfs/unix-rights.ts) after the client says it has stopped its own reading.
// - The socket file is created with the process umask (0755 under the usual 022: only the owner can
//   connect) and then set to `mode` (default 0660), so it is never more open than asked.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import { type ErrorCode, httpStatusFor, IsogroupError, isErrorCode, isIsogroupError } from '../errors.js';
import { parseBdf } from '../model/bdf.js';
import { dupCloexec, sysClose } from '../os/libc.js';
import { type PeerCredentials, peerCredentials, sendFds } from '../os/unix-rights.js';
import { type Logger, silentLogger } from './log.js';

export interface RequestContext {
  method: string;
  path: string;
  params: Record<string, string>;
  query: URLSearchParams;
  /** Parsed JSON body (undefined when empty). */
  body: unknown;
  /** The connecting process as the kernel saw it; null only if the kernel would not say. */
  peer: PeerCredentials | null;
  req: http.IncomingMessage;
  res: http.ServerResponse;
}

/** What a handler returns: a JSON body (status 200), reply(status, body), or STREAMED when it wrote `res` itself. */
export type Handler = (ctx: RequestContext) => unknown | Promise<unknown>;
export const STREAMED: unique symbol = Symbol('isogroup.http.streamed');
const REPLY = Symbol('isogroup.http.reply');
export interface Reply {
  [REPLY]: true;
  status: number;
  body: unknown;
}
export const reply = (status: number, body: unknown): Reply => ({ [REPLY]: true, status, body });

export interface FdReply {
  /**
   * The fds to pass. The server duplicates them (F_DUPFD_CLOEXEC) as soon as the handler returns and
   * sends the duplicates, so the handler may close its own at any later point.
   */
  fds: number[];
  body: unknown;
  /** Called once the hand-off is over (sent, refused by the client, or failed). */
  release?: () => void;
}
export type FdHandler = (ctx: Omit<RequestContext, 'res' | 'body'> & { socket: net.Socket }) => FdReply | Promise<FdReply>;

/** The upgrade token of the fd hand-off protocol. */
export const FD_UPGRADE = 'isogroup-fds';
/** The byte a client sends once it has stopped reading, so the fds cannot be swallowed by libuv. */
export const FD_READY = 'R';

export const errorBody = (error: IsogroupError): { error: { code: ErrorCode; message: string; details: Record<string, unknown> } } => ({
  error: { code: error.code, message: error.message, details: error.details },
});

// bigint (IOVA addresses) as hex strings, the way the CLI prints them.
const jsonReplacer = (_key: string, value: unknown): unknown => (typeof value === 'bigint' ? `0x${value.toString(16)}` : value);
export const toJson = (value: unknown): string => JSON.stringify(value, jsonReplacer);

interface Route {
  method: string;
  parts: string[];
  handler: Handler | null;
  fdHandler: FdHandler | null;
}

const splitPath = (p: string): string[] => p.split('/').filter((s) => s.length > 0);

// Validate a path parameter by its name; everything else is passed through decoded.
const checkParam = (name: string, raw: string): string => {
  let value: string;
  try {
    value = decodeURIComponent(raw);
  } catch {
    throw new IsogroupError('E_USAGE', `path parameter ${name}: malformed percent-encoding`, { param: name });
  }
  if (name === 'bdf') return parseBdf(value, `path parameter ${name}`);
  if (name === 'group' && !/^\d{1,10}$/.test(value)) {
    throw new IsogroupError('E_USAGE', `path parameter group: ${JSON.stringify(value)} is not an IOMMU group number`, { param: name, value });
  }
  return value;
};

const matchParts = (pattern: string[], parts: string[]): Record<string, string> | null => {
  if (pattern.length !== parts.length) return null;
  const params: Record<string, string> = {};
  for (let i = 0; i < pattern.length; i += 1) {
    const p = pattern[i]!;
    if (p.startsWith(':')) params[p.slice(1)] = parts[i]!;
    else if (p !== parts[i]) return null;
  }
  return params;
};

export interface ServerOptions {
  logger?: Logger;
  /** Largest accepted request body (default 1 MiB). */
  maxBodyBytes?: number;
}

export interface ListenOptions {
  /** File mode of the socket (default 0o660). */
  mode?: number;
  /** Group owning the socket (who may talk to the daemon besides root). */
  gid?: number;
}

export class UnixHttpServer {
  private readonly routes: Route[] = [];
  private readonly peers = new WeakMap<net.Socket, PeerCredentials | null>();
  private readonly server: http.Server;
  private readonly logger: Logger;
  private readonly maxBody: number;
  private socketPath: string | null = null;

  constructor(options: ServerOptions = {}) {
    this.logger = options.logger ?? silentLogger;
    this.maxBody = options.maxBodyBytes ?? 1 << 20;
    this.server = http.createServer((req, res) => void this.handle(req, res));
    this.server.on('connection', (socket: net.Socket) => this.peers.set(socket, this.readPeer(socket)));
    this.server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket) => void this.handleUpgrade(req, socket));
    this.server.on('clientError', (_error, socket: net.Socket) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    });
  }

  private readPeer(socket: net.Socket): PeerCredentials | null {
    try {
      return peerCredentials(socket);
    } catch (error) {
      this.logger.warn('cannot read peer credentials', { error });
      return null;
    }
  }

  /** Add a JSON route. */
  route(method: string, pattern: string, handler: Handler): this {
    this.routes.push({ method: method.toUpperCase(), parts: splitPath(pattern), handler, fdHandler: null });
    return this;
  }

  /** Add an fd hand-off route (client: DaemonClient.requestFds). */
  fdRoute(method: string, pattern: string, handler: FdHandler): this {
    this.routes.push({ method: method.toUpperCase(), parts: splitPath(pattern), handler: null, fdHandler: handler });
    return this;
  }

  // Find the route for a request; typed errors for unknown paths and wrong methods.
  private find(method: string, pathname: string, kind: 'json' | 'fds'): { route: Route; params: Record<string, string> } {
    const parts = splitPath(pathname);
    const allowed: string[] = [];
    for (const route of this.routes) {
      if ((kind === 'fds') !== (route.fdHandler !== null)) continue;
      const raw = matchParts(route.parts, parts);
      if (!raw) continue;
      if (route.method !== method) {
        allowed.push(route.method);
        continue;
      }
      const params: Record<string, string> = {};
      for (const [k, v] of Object.entries(raw)) params[k] = checkParam(k, v);
      return { route, params };
    }
    if (allowed.length > 0) {
      throw new IsogroupError('E_NO_ROUTE', `${method} is not allowed on ${pathname} (allowed: ${allowed.join(', ')})`, {
        method,
        path: pathname,
        allow: allowed,
        status: 405,
      });
    }
    throw new IsogroupError('E_NO_ROUTE', `no API route ${method} ${pathname}`, { method, path: pathname });
  }

  private async readBody(req: http.IncomingMessage): Promise<unknown> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > this.maxBody) {
        throw new IsogroupError('E_INVALID_INPUT', `request body larger than ${this.maxBody} bytes`, { limit: this.maxBody, status: 413 });
      }
      chunks.push(chunk as Buffer);
    }
    const text = Buffer.concat(chunks).toString('utf8');
    if (text.trim() === '') return undefined;
    try {
      return JSON.parse(text);
    } catch (error) {
      throw new IsogroupError('E_INVALID_INPUT', `request body is not valid JSON: ${(error as Error).message}`, { where: 'request body' });
    }
  }

  private statusOf(error: IsogroupError): number {
    const s = error.details.status;
    return typeof s === 'number' && s >= 400 && s < 600 ? s : httpStatusFor(error.code);
  }

  // Anything that is not an IsogroupError is a bug: log it in full, answer without internals.
  private asTyped(error: unknown, where: string): IsogroupError {
    if (isIsogroupError(error) && isErrorCode(error.code)) return error;
    this.logger.error('unexpected error in request handler', { where, error, stack: (error as Error)?.stack });
    return new IsogroupError('E_INTERNAL', 'internal error (see the daemon log)', {});
  }

  private send(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string | string[]> = {}): void {
    const text = `${toJson(body)}\n`;
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
    res.end(text);
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const method = (req.method ?? 'GET').toUpperCase();
    const url = new URL(req.url ?? '/', 'http://isogroup.sock');
    const started = Date.now();
    try {
      const { route, params } = this.find(method, url.pathname, 'json');
      const body = await this.readBody(req);
      const ctx: RequestContext = { method, path: url.pathname, params, query: url.searchParams, body, peer: this.peers.get(req.socket) ?? null, req, res };
      const result = await route.handler!(ctx);
      if (result === STREAMED) return;
      if (typeof result === 'object' && result !== null && REPLY in result) {
        const r = result as Reply;
        this.send(res, r.status, r.body);
      } else {
        this.send(res, 200, result === undefined ? { ok: true } : result);
      }
      this.logger.debug('request', { method, path: url.pathname, status: res.statusCode, ms: Date.now() - started });
    } catch (error) {
      const typed = this.asTyped(error, `${method} ${url.pathname}`);
      const status = this.statusOf(typed);
      if (res.headersSent) {
        res.destroy();
        return;
      }
      const allow = typed.details.allow;
      // Drain what is left of a refused body so the connection can be reused.
      req.resume();
      this.send(res, status, errorBody(typed), Array.isArray(allow) ? { allow: allow.join(', ') } : {});
      this.logger.info('request refused', { method, path: url.pathname, status, code: typed.code, uid: this.peers.get(req.socket)?.uid });
    }
  }

  private rawError(socket: net.Socket, error: IsogroupError): void {
    const text = `${toJson(errorBody(error))}\n`;
    const status = this.statusOf(error);
    socket.end(
      `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? 'Error'}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`,
    );
  }

  // fd hand-off: handler first (it may refuse with a normal HTTP error), then 101, wait for the
  // client's ready byte, then one SCM_RIGHTS message with the JSON body.
  private async handleUpgrade(req: http.IncomingMessage, socket: net.Socket): Promise<void> {
    const method = (req.method ?? 'GET').toUpperCase();
    const url = new URL(req.url ?? '/', 'http://isogroup.sock');
    socket.on('error', () => undefined);
    let answer: FdReply;
    let copies: number[] = [];
    try {
      if (String(req.headers.upgrade ?? '').toLowerCase() !== FD_UPGRADE) {
        throw new IsogroupError('E_USAGE', `unsupported upgrade ${JSON.stringify(req.headers.upgrade)} (only ${FD_UPGRADE})`, {});
      }
      const { route, params } = this.find(method, url.pathname, 'fds');
      answer = await route.fdHandler!({ method, path: url.pathname, params, query: url.searchParams, peer: this.peers.get(socket) ?? null, req, socket });
      // Our own copies, taken before anything else can run: the handler may close its fds once it has returned.
      for (const fd of answer.fds) copies.push(dupCloexec(fd, { code: 'E_INTERNAL', what: 'duplicating an fd for hand-off' }));
    } catch (error) {
      for (const fd of copies) sysClose(fd);
      this.rawError(socket, this.asTyped(error, `${method} ${url.pathname} (fds)`));
      return;
    }
    const timer = setTimeout(() => socket.destroy(), 10_000);
    timer.unref();
    try {
      await new Promise<void>((resolve, reject) => {
        socket.write(`HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: ${FD_UPGRADE}\r\n\r\n`);
        socket.once('data', () => resolve());
        socket.once('close', () => reject(new IsogroupError('E_DAEMON', 'client left before taking the fds', {})));
      });
      await sendFds(socket, copies, Buffer.from(toJson(answer.body)));
      this.logger.info('fds handed off', { path: url.pathname, count: answer.fds.length, pid: this.peers.get(socket)?.pid, uid: this.peers.get(socket)?.uid });
      socket.end();
    } catch (error) {
      this.logger.warn('fd hand-off failed', { path: url.pathname, error });
      socket.destroy();
    } finally {
      clearTimeout(timer);
      for (const fd of copies) sysClose(fd);
      copies = [];
      try {
        answer.release?.();
      } catch (error) {
        this.logger.warn('fd hand-off release failed', { error });
      }
    }
  }

  /** Listen on `socketPath`, replacing a stale socket file but never a live daemon or a non-socket. */
  async listen(socketPath: string, options: ListenOptions = {}): Promise<void> {
    await removeStaleSocket(socketPath);
    await new Promise<void>((resolve, reject) => {
      const onError = (error: NodeJS.ErrnoException) => {
        reject(
          new IsogroupError(
            error.code === 'EACCES' ? 'E_PERMISSION' : 'E_DAEMON',
            `cannot listen on ${socketPath}: ${error.code ?? error.message}`,
            { socket: socketPath, errno: error.code },
            { cause: error },
          ),
        );
      };
      this.server.once('error', onError);
      this.server.listen(socketPath, () => {
        this.server.off('error', onError);
        resolve();
      });
    });
    this.socketPath = socketPath;
    fs.chmodSync(socketPath, options.mode ?? 0o660);
    if (options.gid !== undefined) fs.chownSync(socketPath, -1, options.gid);
  }

  /** Stop accepting, close every connection (event streams included), remove the socket file. */
  async close(): Promise<void> {
    const path = this.socketPath;
    this.socketPath = null;
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
    if (path) {
      try {
        fs.unlinkSync(path);
      } catch {
        // already gone
      }
    }
  }

  get listening(): boolean {
    return this.server.listening;
  }
}

/** Remove `socketPath` if it is a socket nobody listens on; refuse a live daemon or any other file. */
export const removeStaleSocket = async (socketPath: string): Promise<void> => {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(socketPath);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new IsogroupError('E_DAEMON', `${socketPath} exists and is not a socket; not replacing it`, { socket: socketPath });
  const live = await new Promise<boolean>((resolve) => {
    const probe = net.connect(socketPath);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (live) throw new IsogroupError('E_DAEMON', `a daemon is already listening on ${socketPath}`, { socket: socketPath });
  fs.unlinkSync(socketPath);
};
