import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../helpers/paths.js';

// key -> every value it is given (systemd allows repeated keys such as DeviceAllow=).
const parseUnit = (text: string): Map<string, string[]> => {
  const keys = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (m) keys.set(m[1]!, [...(keys.get(m[1]!) ?? []), m[2]!]);
  }
  return keys;
};

describe('packaging/isogroup.service', () => {
  const unit = parseUnit(fs.readFileSync(path.join(repoRoot, 'packaging/isogroup.service'), 'utf8'));
  const one = (k: string) => unit.get(k)?.at(-1);

  it('runs the daemon in the foreground with its runtime and state directories', () => {
    expect(one('Type')).toBe('exec');
    expect(one('ExecStart')).toMatch(/\/isogroup daemon --socket \/run\/isogroup\/isogroup\.sock --state-dir \/var\/lib\/isogroup$/);
    expect(one('RuntimeDirectory')).toBe('isogroup');
    expect(one('StateDirectory')).toBe('isogroup');
    expect(one('ExecReload')).toBe('/bin/kill -HUP $MAINPID');
    expect(one('KillSignal')).toBe('SIGTERM');
  });

  it('is hardened without taking away sysfs writes, /dev/vfio or modprobe', () => {
    expect(one('ProtectSystem')).toBe('strict'); // leaves /sys and /dev alone
    for (const forbidden of ['ProtectKernelTunables', 'PrivateDevices', 'ProtectKernelModules', 'MemoryDenyWriteExecute']) {
      expect(unit.has(forbidden), forbidden).toBe(false);
    }
    expect(unit.get('DeviceAllow')).toEqual(['/dev/vfio/vfio rw', 'char-vfio rw']);
    expect(one('RestrictAddressFamilies')!.split(' ').sort()).toEqual(['AF_NETLINK', 'AF_UNIX']);
    expect(one('CapabilityBoundingSet')!.split(' ')).toEqual(expect.arrayContaining(['CAP_CHOWN', 'CAP_SYS_MODULE']));
    expect(one('NoNewPrivileges')).toBe('yes');
  });
});
