import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

// Fixture roots live on tmpfs (/dev/shm) for speed; workers cannot always clean up after themselves,
// so remove what this run created once every test file is done.
const PREFIXES = ['isogroup-pristine-', 'isogroup-sim-', 'isogroup-'];
const bases = (): string[] => [...new Set(['/dev/shm', os.tmpdir()].filter((d) => fs.existsSync(d)))];

const snapshot = (): Set<string> => {
  const out = new Set<string>();
  for (const base of bases()) for (const name of fs.readdirSync(base)) if (PREFIXES.some((p) => name.startsWith(p))) out.add(path.join(base, name));
  return out;
};

export default function setup(): () => void {
  const before = snapshot();
  return () => {
    for (const p of snapshot()) if (!before.has(p)) fs.rmSync(p, { recursive: true, force: true });
  };
}
