import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { runCli } from '../../cli/main.js';
import { repoRoot } from '../helpers/paths.js';

// The DaemonSet mounts what the daemon touches on the host and runs flags the daemon has.
describe('deploy/kubernetes', () => {
  it('a privileged DaemonSet with the host paths the daemon reads and writes, running flags that exist', async () => {
    const ds = parse(fs.readFileSync(path.join(repoRoot, 'deploy/kubernetes/daemonset.yaml'), 'utf8'));
    expect(ds).toMatchObject({ apiVersion: 'apps/v1', kind: 'DaemonSet' });
    const pod = ds.spec.template.spec;
    expect(pod.hostNetwork).toBe(true);
    const container = pod.containers[0];
    expect(container.securityContext).toEqual({ privileged: true });
    const hostPaths = Object.fromEntries(pod.volumes.map((v: { name: string; hostPath: { path: string } }) => [v.name, v.hostPath.path]));
    const mounts = Object.fromEntries(container.volumeMounts.map((m: { name: string; mountPath: string }) => [hostPaths[m.name], m.mountPath]));
    for (const p of ['/sys', '/dev/vfio', '/var/lib/kubelet/device-plugins', '/run/isogroup', '/var/lib/isogroup', '/etc/cdi']) expect(mounts[p], p).toBe(p);
    expect(container.args.slice(0, 2)).toEqual(['daemon', '--kubelet']);
    let help = '';
    await runCli(['daemon', '--help'], { stdout: (s) => (help += s), stderr: (s) => (help += s) });
    let globals = '';
    await runCli(['--help'], { stdout: (s) => (globals += s), stderr: () => undefined });
    for (const flag of container.args.filter((a: string) => a.startsWith('--'))) expect(`${help}\n${globals}`, flag).toContain(flag);
    // The socket the CLI is told about in the README is inside the mounted /run/isogroup.
    expect(container.args[container.args.indexOf('--socket') + 1]).toBe('/run/isogroup/isogroup.sock');
  });
});
