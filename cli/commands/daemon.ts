import type { Command } from 'commander';
import { GuardDaemon } from '../../daemon/daemon.js';
import { createLogger, type LogFormat, parseLogLevel } from '../../daemon/log.js';
import { IsogroupError } from '../../errors.js';
import { KubeletPlugin } from '../../kubelet/plugin.js';
import { type CliIo, output, type Run } from '../io.js';
import { sessionOf } from '../options.js';

// `isogroup daemon`: the hotplug guard in the foreground (systemd runs it as is; logs go to stderr).

interface DaemonFlags {
  policy?: string;
  watchEngine?: string;
  rescanMs?: string;
  logLevel?: string;
  logFormat?: string;
  socketGroup?: string;
  kubelet?: boolean;
  kubeletDir?: string;
  kubeletResources?: string;
  kubeletOwner?: string;
  cdiDir?: string;
}

const intOption = (text: string | undefined, name: string, min: number): number | undefined => {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text) || Number(text) < min)
    throw new IsogroupError('E_USAGE', `${name} must be a whole number >= ${min}, got ${JSON.stringify(text)}`, { [name]: text });
  return Number(text);
};

export const registerDaemon = (program: Command, run: Run, io: CliIo): void => {
  program
    .command('daemon')
    .description('run the hotplug guard: hold every assigned group, refuse and repair host-driver binds inside them, serve the socket API')
    .option('--rescan-ms <ms>', 'backstop full rescan interval in ms (0 = only on events)')
    .option('--log-level <level>', 'debug, info, warn or error', 'info')
    .option('--log-format <format>', 'json or logfmt', 'json')
    .option('--socket-group <gid>', 'numeric group that may use the socket (mode 0660)')
    .option('--watch-engine <engine>', 'fixture roots: fs-watch (inotify, default) or chokidar', 'fs-watch')
    .option(
      '--policy <file>',
      'policy file (JSON or YAML): who may claim what; default ROOT/etc/isogroup/policy.yaml (/etc/isogroup/policy.yaml on the live host)',
    )
    .option('--kubelet', 'serve the kubelet device plugin API v1beta1: the groups assigned to the kubelet owner, one device per group')
    .option('--kubelet-dir <dir>', "the kubelet's device plugin directory (default /var/lib/kubelet/device-plugins)")
    .option('--kubelet-resources <file>', "name resources by selector (YAML or JSON) instead of isogroup.io/VVVV_DDDD of each group's first endpoint")
    .option('--kubelet-owner <name>', 'the owner whose assigned groups form the pool (default kubernetes)')
    .option('--cdi-dir <dir>', 'keep the CDI spec isogroup.io.yaml current here (default /etc/cdi with --kubelet; alone, without the kubelet)')
    .action((flags: DaemonFlags, cmd: Command) =>
      run(async () => {
        if (flags.logFormat !== 'json' && flags.logFormat !== 'logfmt')
          throw new IsogroupError('E_USAGE', `--log-format must be json or logfmt, got ${JSON.stringify(flags.logFormat)}`, {});
        if (flags.watchEngine !== 'fs-watch' && flags.watchEngine !== 'chokidar')
          throw new IsogroupError('E_USAGE', `--watch-engine must be fs-watch or chokidar, got ${JSON.stringify(flags.watchEngine)}`, {});
        const rescanMs = intOption(flags.rescanMs, '--rescan-ms', 0);
        const gid = intOption(flags.socketGroup, '--socket-group', 0);
        const session = sessionOf(cmd, {
          ...(flags.policy !== undefined ? { policyFile: flags.policy } : {}),
          ...(flags.kubeletDir !== undefined ? { kubeletDir: flags.kubeletDir } : {}),
          ...(flags.kubeletResources !== undefined ? { kubeletResources: flags.kubeletResources } : {}),
          ...(flags.kubeletOwner !== undefined ? { kubeletOwner: flags.kubeletOwner } : {}),
          ...(flags.cdiDir !== undefined ? { cdiDir: flags.cdiDir } : {}),
        });
        const kubeletFlags = ['kubeletDir', 'kubeletResources', 'kubeletOwner'] as const;
        if (!flags.kubelet && kubeletFlags.some((k) => flags[k] !== undefined))
          throw new IsogroupError('E_USAGE', '--kubelet-dir, --kubelet-resources and --kubelet-owner need --kubelet', {});
        // Under systemd (JOURNAL_STREAM set) lines carry journald priorities.
        const journal = Boolean(session.env.JOURNAL_STREAM);
        const logger = createLogger({
          level: parseLogLevel(flags.logLevel ?? 'info'),
          format: flags.logFormat as LogFormat,
          journal,
          stream: { write: (l: string) => io.stderr(l) },
        });
        const daemon = await GuardDaemon.start({
          session,
          ...(gid !== undefined ? { socketGid: gid } : {}),
          ...(rescanMs !== undefined ? { rescanMs } : {}),
          watchEngine: flags.watchEngine,
          logger,
        });
        let kubelet: KubeletPlugin | null = null;
        try {
          if (flags.kubelet || flags.cdiDir !== undefined) kubelet = await KubeletPlugin.start(daemon, { serveKubelet: flags.kubelet === true });
        } catch (error) {
          await daemon.close();
          throw error;
        }
        // SIGTERM/SIGINT: close cleanly and release nothing; the journal stays and the next start holds again.
        await new Promise<void>((resolve) => {
          const stop = (signal: string): void => {
            logger.info('stopping', { signal });
            void (kubelet?.close() ?? Promise.resolve()).then(() => daemon.close()).then(resolve);
          };
          process.once('SIGTERM', () => stop('SIGTERM'));
          process.once('SIGINT', () => stop('SIGINT'));
          process.on('SIGHUP', () => {
            logger.info('SIGHUP: reloading', {});
            void daemon.reload().catch((error: unknown) => logger.error('reload failed; keeping the old configuration', { error: (error as Error).message }));
          });
        });
        return output(null, () => '');
      }),
    );
};
