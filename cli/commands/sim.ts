import type { Command } from 'commander';
import { IsogroupError } from '../../errors.js';
import { parseBdf } from '../../model/bdf.js';
import { unpackForSimulation } from '../../sim/index.js';
import { PCI_RESCAN, pciDeviceFile } from '../../sysfs/paths.js';
import { output, type Run } from '../io.js';
import { globalsOf, sessionOf, usage } from '../options.js';

// The fixture kernel from the command line: rehearse hotplug, SR-IOV and failures on a fixture root.

const hexArg = (what: string, text: string, max: number): number => {
  const t = text.trim().toLowerCase().replace(/^0x/, '');
  if (!/^[0-9a-f]+$/.test(t) || parseInt(t, 16) > max) throw usage(`${what}: ${JSON.stringify(text)} is not a hex id up to 0x${max.toString(16)}`);
  return parseInt(t, 16);
};

const simRoot = (cmd: Command) => {
  if (!globalsOf(cmd).root) throw usage('sim commands need --root DIR (a writable fixture root; see `isogroup sim unpack`)');
  return sessionOf(cmd, { simulate: true }).sim();
};

export const registerSim = (program: Command, run: Run): void => {
  const sim = program.command('sim').description('the fixture kernel: hot-add, remove, rescan, inject failures on a fixture root');

  sim
    .command('unpack')
    .description('turn a capture tarball into a writable fixture root for --simulate')
    .argument('<capture>', 'capture .tar.gz')
    .requiredOption('--out <dir>', 'new directory')
    .action((capture: string, opts: { out: string }, _cmd: Command) =>
      run(() => {
        const s = unpackForSimulation(capture, opts.out);
        const devices = s.kernel.devices().length;
        return output({ root: s.kernel.root, devices }, () => `${s.kernel.root}: ${devices} devices; use --root ${opts.out} --simulate`);
      }),
    );

  sim
    .command('add-device')
    .description('hot-add a device behind a bridge (its host driver binds at once, whatever drivers_autoprobe says)')
    .requiredOption('--bridge <bdf>', 'bridge it lands behind')
    .requiredOption('--vendor <id>', 'vendor id (hex)')
    .requiredOption('--device <id>', 'device id (hex)')
    .option('--class <code>', 'class code (hex, 24 bits)', '020000')
    .option('--driver <name>', 'its default host driver')
    .option('--bdf <bdf>', 'exact address (default: first free slot)')
    .action((opts: { bridge: string; vendor: string; device: string; class: string; driver?: string; bdf?: string }, cmd: Command) =>
      run(() => {
        const s = simRoot(cmd);
        const r = s.kernel.addDevice({
          bridge: opts.bridge,
          vendor: hexArg('--vendor', opts.vendor, 0xffff),
          device: hexArg('--device', opts.device, 0xffff),
          classCode: hexArg('--class', opts.class, 0xffffff),
          driver: opts.driver ?? null,
          ...(opts.bdf !== undefined ? { bdf: opts.bdf } : {}),
        });
        return output(r, () =>
          r.pending
            ? `${r.bdf}: waiting for a rescan (the bridge has no hotplug driver)`
            : `${r.bdf}: group ${r.group}, driver ${r.driver ?? 'none'}${r.attachError ? ` (${r.attachError})` : ''}`,
        );
      }),
    );

  sim
    .command('remove')
    .description('remove a device (as echo 1 > .../remove); rescan brings it back')
    .argument('<bdf>')
    .action((bdf: string, _opts, cmd: Command) =>
      run(() => {
        const s = simRoot(cmd);
        const device = parseBdf(bdf, 'device');
        if (!s.kernel.devDir(device)) throw new IsogroupError('E_NOT_FOUND', `no PCI device ${device} under ${s.kernel.root}`, { bdf: device });
        s.port.writeText(pciDeviceFile(device, 'remove'), '1');
        return output({ removed: bdf }, () => `${bdf} removed`);
      }),
    );

  sim
    .command('rescan')
    .description(`echo 1 > /${PCI_RESCAN}`)
    .action((_opts, cmd: Command) =>
      run(() => {
        const s = simRoot(cmd);
        const before = new Set(s.kernel.devices());
        s.port.writeText(PCI_RESCAN, '1');
        const added = s.kernel.devices().filter((b) => !before.has(b));
        return output({ added }, () => (added.length ? `added ${added.join(' ')}` : 'nothing new'));
      }),
    );

  sim
    .command('write')
    .description(`write a sysfs file through the fixture kernel (e.g. ${pciDeviceFile('BDF', 'sriov_numvfs')} 4)`)
    .argument('<file>', 'root-relative sysfs path')
    .argument('<value>')
    .action((file: string, value: string, _opts, cmd: Command) =>
      run(() => {
        simRoot(cmd).port.writeText(file, value);
        return output({ file, value }, () => '');
      }),
    );

  sim
    .command('fail')
    .description('inject a failure: the n-th write from now, or every write to a file')
    .option('--nth <n>', 'fail the n-th write from now (1 = the next)')
    .option('--file <suffix>', 'fail writes to paths ending in this')
    .option('--errno <name>', 'errno to fail with', 'EIO')
    .option('--persistent', 'keep failing (default: once)')
    .action((opts: { nth?: string; file?: string; errno: string; persistent?: boolean }, cmd: Command) =>
      run(() => {
        if (opts.nth === undefined && opts.file === undefined) throw usage('sim fail needs --nth N or --file SUFFIX');
        if (opts.nth !== undefined && !/^[1-9]\d*$/.test(opts.nth)) throw usage(`--nth: ${JSON.stringify(opts.nth)} is not a positive integer`);
        if (!/^E[A-Z0-9]+$/.test(opts.errno)) throw usage(`--errno: ${JSON.stringify(opts.errno)} is not an errno name`);
        simRoot(cmd).kernel.injectFailure({
          errno: opts.errno,
          ...(opts.nth !== undefined ? { nth: Number(opts.nth) } : {}),
          ...(opts.file !== undefined ? { file: opts.file } : {}),
          ...(opts.persistent ? { persistent: true } : {}),
        });
        return output({ injected: true }, () => 'failure armed');
      }),
    );

  sim
    .command('clear-failures')
    .description('disarm every injected failure')
    .action((_opts, cmd: Command) =>
      run(() => {
        simRoot(cmd).kernel.clearFailures();
        return output({ cleared: true }, () => 'no failures armed');
      }),
    );

  sim
    .command('dmesg')
    .description("the fixture kernel's log")
    .action((_opts, cmd: Command) =>
      run(() => {
        const lines = simRoot(cmd).kernel.dmesg();
        return output({ lines }, () => lines.join('\n'));
      }),
    );
};
