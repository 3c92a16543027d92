import * as fs from 'node:fs';
import * as path from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { showDevice } from '../../api/devices.js';
import { runCli } from '../../cli/main.js';
import { NodeSysfsPort, type SysfsPort } from '../../sysfs/port.js';
import { bundledCapture, repoRoot } from '../helpers/paths.js';

const mixed = bundledCapture('mixed');
const expected = JSON.parse(fs.readFileSync(mixed.replace(/\.tar\.gz$/, '.groups.json'), 'utf8')) as {
  devices: Record<string, { vendor: string; device: string; class: string; driver: string | null; group: number | null; parent: string | null }>;
};

const run = async (argv: string[]) => {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(argv, { stdout: (t) => out.push(t), stderr: (t) => err.push(t) });
  return { code, out: out.join(''), err: err.join('') };
};

describe('isogroup devices', () => {
  it('--json lists every function with the documented field names', async () => {
    const r = await run(['--root', mixed, 'devices', '--json']);
    expect(r.code).toBe(0);
    const devices = JSON.parse(r.out).devices as Record<string, unknown>[];
    expect(devices.map((d) => d.bdf)).toEqual(Object.keys(expected.devices).sort());
    for (const d of devices) {
      const e = expected.devices[d.bdf as string]!;
      expect({ bdf: d.bdf, vendor: d.vendor, device: d.device, class: d.class, driver: d.driver, kernelGroup: d.kernelGroup }).toEqual({
        bdf: d.bdf,
        vendor: e.vendor,
        device: e.device,
        class: e.class,
        driver: e.driver,
        kernelGroup: e.group === null ? null : String(e.group),
      });
    }
  });

  it('prints a table with one row per function', async () => {
    const r = await run(['--root', mixed, 'devices']);
    expect(r.code).toBe(0);
    const rows = r.out
      .trim()
      .split('\n')
      .filter((l) => /^[0-9a-f]{4}:/.test(l));
    expect(rows.map((l) => l.split(/\s+/)[0])).toEqual(Object.keys(expected.devices).sort());
  });
});

describe('isogroup show', () => {
  it('shows capabilities and the bridge path to the root bus', async () => {
    const deep = Object.entries(expected.devices).find(([, e]) => e.parent && expected.devices[e.parent]?.parent)![0];
    const r = await run(['--root', mixed, 'show', deep, '--json']);
    expect(r.code).toBe(0);
    const shown = JSON.parse(r.out);
    const chain: string[] = [];
    for (let p = expected.devices[deep]!.parent; p; p = expected.devices[p]!.parent) chain.push(p);
    expect(shown.path.map((p: { bdf: string }) => p.bdf)).toEqual(chain);
    expect(shown.device.capabilities.length).toBeGreaterThan(0);
    const text = await run(['--root', mixed, 'show', deep]);
    expect(text.out).toContain('path to root bus:');
  });

  it('refuses ../../etc with E_INVALID_BDF and exit 2', async () => {
    const r = await run(['--root', mixed, 'show', '../../etc']);
    expect(r.code).toBe(2);
    expect(r.err).toContain('E_INVALID_BDF');
    const j = await run(['--root', mixed, 'show', '../../etc', '--json']);
    expect(JSON.parse(j.out).error.code).toBe('E_INVALID_BDF');
  });

  it('never turns a non-BDF into a path: the root is not touched at all', () => {
    const touched: string[] = [];
    const inner = new NodeSysfsPort(repoRoot);
    const spy = new Proxy(inner, {
      get(target, prop, receiver) {
        const v = Reflect.get(target, prop, receiver) as unknown;
        return typeof v === 'function'
          ? (...args: unknown[]) => {
              touched.push(`${String(prop)} ${String(args[0])}`);
              return (v as (...a: unknown[]) => unknown).apply(target, args);
            }
          : v;
      },
    }) as SysfsPort;
    for (const bad of ['../../etc', '0000:00:1f.3/../../..', '/etc/passwd', '0000:00:20.0', '00:1f.3\u0000', '']) {
      expect(() => showDevice(bad, { port: spy, pciIds: null })).toThrow(expect.objectContaining({ code: 'E_INVALID_BDF' }));
    }
    expect(touched).toEqual([]);
  });

  it('a well-formed BDF that is not there is E_NOT_FOUND, exit 1', async () => {
    const r = await run(['--root', mixed, 'show', '0000:7f:1f.7']);
    expect(r.code).toBe(1);
    expect(r.err).toContain('E_NOT_FOUND');
  });

  it('the launcher exits 2 for a non-BDF (spawned bin/isogroup)', async () => {
    const r = await execa(path.join(repoRoot, 'bin/isogroup'), ['--root', mixed, 'show', '../../etc'], { reject: false });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain('E_INVALID_BDF');
    expect(r.stdout).toBe('');
  });
});
