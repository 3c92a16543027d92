// QMP (QEMU Machine Protocol) client, no dependencies. Used on the host (CLI below, and the relay that
// lets the guest drive QMP over its second serial port) and, with a tty stream, inside the guest.
//
//   node test/kernel/lib/qmp.mjs SOCKET COMMAND [JSON-ARGUMENTS]
//   e.g. node test/kernel/lib/qmp.mjs runs/latest/acs/qmp.sock device_add '{"driver":"e1000","bus":"ppb1","addr":"0x5"}'
import net from 'node:net';
import { pathToFileURL } from 'node:url';

/** Splits a byte stream into JSON lines. */
export function onJsonLines(stream, handler) {
  let buf = '';
  stream.on('data', (chunk) => {
    buf += chunk.toString('utf8');
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).replace(/\r$/, '').trim();
      buf = buf.slice(nl + 1);
      if (!line) continue;
      let msg;
      try {
        msg = JSON.parse(line);
      } catch {
        continue;
      } // noise on a serial line is not a message
      handler(msg);
    }
  });
}

/** A QMP session over any duplex stream. Commands carry an id, so replies are matched even when
 * events (or, over a serial relay, stale lines) arrive in between. */
export class Qmp {
  constructor(readable, writable) {
    this.w = writable;
    this.next = 1;
    this.pending = new Map();
    this.events = [];
    this.greeting = null;
    this.greeted = new Promise((resolve) => {
      this.onGreeting = resolve;
    });
    onJsonLines(readable, (msg) => {
      if (msg.QMP) {
        this.greeting = msg;
        this.onGreeting(msg);
        return;
      }
      if (msg.event) {
        this.events.push(msg);
        return;
      }
      const p = msg.id !== undefined ? this.pending.get(msg.id) : undefined;
      if (!p) return;
      this.pending.delete(msg.id);
      p(msg);
    });
  }

  /** Sends a command; resolves with the whole reply ({return} or {error}). */
  raw(execute, args, timeoutMs = 30000) {
    const id = `kt-${process.pid}-${this.next++}`;
    const msg = { execute, id, ...(args ? { arguments: args } : {}) };
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`QMP ${execute}: no reply in ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, (reply) => {
        clearTimeout(timer);
        resolve(reply);
      });
      this.w.write(`${JSON.stringify(msg)}\n`);
    });
  }

  /** Sends a command; resolves with its return value, rejects with QEMU's error text. */
  async execute(execute, args, timeoutMs) {
    const r = await this.raw(execute, args, timeoutMs);
    if (r.error) throw new Error(`QMP ${execute}: ${r.error.class}: ${r.error.desc}`);
    return r.return;
  }

  /** Waits for an event (already received ones count), e.g. DEVICE_DELETED for a device id. */
  async waitEvent(pred, timeoutMs = 30000) {
    const t0 = Date.now();
    for (;;) {
      const i = this.events.findIndex(pred);
      if (i >= 0) return this.events.splice(i, 1)[0];
      if (Date.now() - t0 > timeoutMs) throw new Error('QMP: event not seen in time');
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

/** Connects to QEMU's QMP unix socket (retrying while QEMU starts) and negotiates capabilities. */
export async function connectQmp(path, timeoutMs = 30000) {
  const t0 = Date.now();
  for (;;) {
    try {
      const sock = await new Promise((resolve, reject) => {
        const s = net.connect(path);
        s.once('connect', () => resolve(s));
        s.once('error', reject);
      });
      const q = new Qmp(sock, sock);
      q.socket = sock;
      await q.greeted;
      await q.execute('qmp_capabilities');
      return q;
    } catch (e) {
      if (Date.now() - t0 > timeoutMs) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const [sock, cmd, args] = process.argv.slice(2);
  if (!sock || !cmd) {
    console.error('usage: qmp.mjs SOCKET COMMAND [JSON-ARGS]');
    process.exit(2);
  }
  const q = await connectQmp(sock, 5000);
  const r = await q.raw(cmd, args ? JSON.parse(args) : undefined);
  console.log(JSON.stringify(r.error ?? r.return, null, 1));
  q.socket.end();
  process.exit(r.error ? 1 : 0);
}
