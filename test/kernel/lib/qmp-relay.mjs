// Host side of the guest's QMP line: connects QEMU's QMP socket (capabilities negotiated here) and the
// guest's second serial port (a unix socket on the host, /dev/ttyS1 in the guest), then passes JSON lines
// both ways. The guest's check program thereby issues device_add/device_del itself, in step with its
// own observations, with no protocol beyond QMP. Ends when QEMU goes away.
//   node qmp-relay.mjs QMP_SOCKET SERIAL_SOCKET [LOG]
import fs from 'node:fs';
import net from 'node:net';
import { connectQmp, onJsonLines } from './qmp.mjs';

const [qmpPath, serialPath, logPath] = process.argv.slice(2);
const log = logPath ? fs.createWriteStream(logPath, { flags: 'a' }) : null;
const note = (dir, msg) => log?.write(`${(performance.now() / 1000).toFixed(3)} ${dir} ${JSON.stringify(msg)}\n`);

const qmp = await connectQmp(qmpPath, 120000);
const serial = await new Promise((resolve, reject) => {
  const t0 = Date.now();
  const tryOnce = () => {
    const s = net.connect(serialPath);
    s.once('connect', () => resolve(s));
    s.once('error', (e) => (Date.now() - t0 > 120000 ? reject(e) : setTimeout(tryOnce, 100)));
  };
  tryOnce();
});
// Replies and events from QEMU go to the guest as they come (the guest matches replies by id).
onJsonLines(qmp.socket, (msg) => {
  note('<', msg);
  if (!msg.QMP) serial.write(`${JSON.stringify(msg)}\n`);
});
// Lines from the guest are QMP commands; anything else is dropped.
onJsonLines(serial, (msg) => {
  if (msg && typeof msg.execute === 'string') {
    note('>', msg);
    qmp.socket.write(`${JSON.stringify(msg)}\n`);
  }
});
const end = () => {
  log?.end();
  process.exit(0);
};
qmp.socket.on('close', end);
serial.on('close', end);
