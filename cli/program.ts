import { Command } from 'commander';
import { registerCdi } from './commands/cdi.js';
import { registerContexts } from './commands/contexts.js';
import { registerDaemon } from './commands/daemon.js';
import { registerDevices } from './commands/devices.js';
import { registerGroups } from './commands/groups.js';
import { registerImport } from './commands/import.js';
import { registerSim } from './commands/sim.js';
import { registerSnapshot } from './commands/snapshot.js';
import { registerTransactions } from './commands/transactions.js';
import type { CliIo, Output, Run } from './io.js';

// Each command registers from its own module: parse, call the API, hand back data and a renderer.
export const buildProgram = (io: CliIo, onOutput: (o: Output) => void = () => undefined): Command => {
  const run: Run = async (action) => onOutput(await action());
  const program = new Command('isogroup')
    .description('Which PCI devices can be handed to an untrusted user, by whole IOMMU group, and the handing itself')
    .version('0.1.0')
    .option('--root <dir>', 'a directory that looks like / (fixture or capture), or a capture .tar.gz (default: the live host)')
    .option('--json', 'print JSON')
    .option('--as <owner>', "an owner's view: only the devices and groups of its context (devices, groups, status)")
    .option('--state-dir <dir>', 'state directory (journal, locks, audit; default /var/lib/isogroup, ROOT/.isogroup-sim/state under --simulate)')
    .option('--socket <path>', 'daemon socket (default /run/isogroup.sock, ROOT/.isogroup-sim/isogroup.sock under --simulate)')
    .option('--simulate', "give a fixture root the kernel's write semantics (the fixture kernel)")
    .showHelpAfterError()
    .configureOutput({ writeOut: io.stdout, writeErr: io.stderr });
  registerDevices(program, run);
  registerImport(program, run);
  registerSnapshot(program, run);
  registerGroups(program, run);
  registerTransactions(program, run);
  registerSim(program, run);
  registerDaemon(program, run, io);
  registerContexts(program, run);
  registerCdi(program, run);
  const configure = (cmd: Command): void => {
    cmd.exitOverride().configureOutput({ writeOut: io.stdout, writeErr: io.stderr });
    for (const sub of cmd.commands) configure(sub);
  };
  configure(program);
  return program;
};
