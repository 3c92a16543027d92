import { Command } from 'commander';
import type { CliIo } from './context.js';
import { registerDevices } from './commands/devices.js';
import { registerImport } from './commands/import.js';
import { registerSnapshot } from './commands/snapshot.js';
import { registerGroups } from './commands/groups.js';
import { registerBind } from './commands/bind.js';
import { registerSim } from './commands/sim.js';
import { registerDaemon } from './commands/daemon.js';
import { registerContexts } from './commands/contexts.js';

// Each command is registered from its own module; every one is a thin call into the API.
const registrations: ((program: Command, io: CliIo) => void)[] = [registerDevices, registerImport, registerSnapshot, registerGroups, registerBind, registerSim, registerDaemon, registerContexts];

export const buildProgram = (io: CliIo): Command => {
  const program = new Command('isogroup')
    .description('Which PCI devices can be handed to an untrusted user, by whole IOMMU group, and the handing itself')
    .version('0.1.0')
    .option('--root <dir>', 'a directory that looks like / (fixture or capture), or a capture .tar.gz', undefined)
    .option('--json', 'print JSON')
    .option('--as <owner>', "an owner's view: only the devices and groups of its context (devices, groups, status)")
    .option('--state-dir <dir>', 'state directory (journal, locks, audit)', '/var/lib/isogroup')
    .option('--socket <path>', 'daemon socket', '/run/isogroup.sock')
    .option('--simulate', 'give a fixture root the kernel\'s write semantics (the fixture kernel)')
    .showHelpAfterError()
    .configureOutput({ writeOut: io.stdout, writeErr: io.stderr });
  program.exitOverride();
  for (const register of registrations) register(program, io);
  for (const cmd of program.commands) cmd.exitOverride().configureOutput({ writeOut: io.stdout, writeErr: io.stderr });
  return program;
};
