// The one place where options and the environment become settings. Every command, the daemon, its
// action thread and the programmatic API open a Session and take every setting from it: the root (a
// directory or a capture), the fixture kernel, the state directory, the socket, the policy file, who
// asks and who gets a group, and the kubelet's side (device plugin directory, CDI directory, the pool's
// owner, the resources file). Nothing else reads defaults or process.env.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { isTarball, rootDirectory } from '../capture/unpack.js';
import { IsogroupError } from '../errors.js';
import { type IommuUnitCaps, unitCapsOf } from '../groups/iova.js';
import { defaultPolicy, type Policy } from '../groups/policy.js';
import type { HostSnapshot } from '../model/device.js';
import { isOwnerName, OWNER_NAME_RULE, type Subject } from '../model/owner.js';
import type { PciIds } from '../model/pci-ids.js';
import { type ModuleLoader, modprobeLoader } from '../os/modules.js';
import { DEFAULT_PCI_IDS_PATHS, loadPciIds } from '../os/pci-ids.js';
import { readUserDatabase, subjectForIds, subjectForName, type UserDatabase } from '../os/users.js';
import type { VfioBackend } from '../os/vfio.js';
import { KernelVfioBackend } from '../os/vfio-kernel.js';
import type { ResourceRules } from '../pool/resources.js';
import { crashHooks, isSimulatedPort, openSimulatedRoot, SIM_DIR, type SimulatedRoot, SimulatedVfioBackend } from '../sim/index.js';
import { PolicyStore } from '../state/policy-store.js';
import { loadResourceRules } from '../state/resources-file.js';
import { readIommuRegisters } from '../sysfs/iommu-caps.js';
import { readKernelRelease } from '../sysfs/kernel-release.js';
import { NodeSysfsPort, type SysfsPort } from '../sysfs/port.js';

export type Environment = Readonly<Record<string, string | undefined>>;

export interface SessionOptions {
  /** A directory that looks like "/" (a fixture), or a capture .tar.gz; default the live host "/". */
  root?: string;
  /** Give a fixture root the kernel's write semantics (the fixture kernel). */
  simulate?: boolean;
  /** Journal, locks, contexts, audit. Default: /var/lib/isogroup on the live host, ROOT/.isogroup-sim/state under --simulate, none for another root. */
  stateDir?: string;
  /** The daemon's socket. Default: /run/isogroup.sock on the live host, ROOT/.isogroup-sim/isogroup.sock under --simulate. */
  socket?: string;
  /** Policy file (JSON or YAML); null: none (root only). Default ROOT/etc/isogroup/policy.yaml (/etc/isogroup/policy.yaml live). */
  policyFile?: string | null;
  /** A policy already loaded (the daemon's, which it reloads on SIGHUP). */
  policy?: Policy;
  /** Who gets a group (--to); default SUDO_USER under sudo, else the invoking user. */
  owner?: string;
  /** Who asks (a socket peer); default this process, named from the user database. */
  subject?: Subject;
  /** An owner's view (--as): only that owner's groups and devices. */
  as?: string;
  /** The kernel release whose quirk tables apply; default the root's own. */
  kernelRelease?: string;
  /** pci.ids for names; null: no names. Default: the host's (ISOGROUP_PCI_IDS overrides where). */
  pciIds?: PciIds | null;
  /** An open port to use (the daemon shares its own; tests pass faulty ones). */
  port?: SysfsPort;
  /** How a missing vfio-pci is loaded; default modprobe on the live host, the fixture kernel's own when simulated. */
  moduleLoader?: ModuleLoader | null;
  /** The process environment; default process.env. */
  env?: Environment;
  /** The kubelet's device plugin directory (its kubelet.sock and the plugin's endpoints). Default /var/lib/kubelet/device-plugins on the live host, ROOT/.isogroup-sim/device-plugins under --simulate. */
  kubeletDir?: string;
  /** Where the CDI spec is kept. Default /etc/cdi on the live host, ROOT/.isogroup-sim/cdi under --simulate. */
  cdiDir?: string;
  /** The owner whose assigned groups form the kubelet's pool. Default kubernetes. */
  kubeletOwner?: string;
  /** A resources file (YAML or JSON) naming kubelet resources by selector; null or absent: by vendor:device. */
  kubeletResources?: string | null;
  /** A session already open (the daemon's per-request one): every other option is then ignored. */
  session?: Session;
}

/** What crosses to the action thread: enough to open the same session there. */
export interface SessionWire {
  root: string;
  simulate: boolean;
  stateDir: string | null;
}

const DEFAULT_STATE_DIR = '/var/lib/isogroup';
const DEFAULT_SOCKET = '/run/isogroup.sock';
const POLICY_FILE = 'etc/isogroup/policy.yaml';
// The kubelet's DevicePluginPath (k8s.io/kubelet deviceplugin/v1beta1 constants) and the CDI spec directory.
const DEFAULT_KUBELET_DIR = '/var/lib/kubelet/device-plugins';
const DEFAULT_CDI_DIR = '/etc/cdi';
const DEFAULT_KUBELET_OWNER = 'kubernetes';

// The host's pci.ids is large and never changes under a process: parsed once.
let hostPciIds: { key: string; ids: PciIds | null } | null = null;

const intOrUndefined = (text: string | undefined): number | undefined => (text !== undefined && /^\d+$/.test(text) ? Number(text) : undefined);

export class Session {
  /** The root as given (a path or a capture tarball), for messages. */
  readonly rootArg: string;
  /** The directory read (a capture is unpacked into the cache). */
  readonly root: string;
  /** The live host ("/"). */
  readonly live: boolean;
  readonly simulate: boolean;
  /** Writes reach a kernel: the live host or the fixture kernel. */
  readonly writable: boolean;
  /** null: this root has no state (a capture or fixture without --simulate). */
  readonly stateDir: string | null;
  /** null: no daemon can serve this root. */
  readonly socket: string | null;
  readonly policyFile: string | null;
  /** null: this root has no kubelet (a capture or fixture without --simulate). */
  readonly kubeletDir: string | null;
  readonly cdiDir: string | null;
  readonly kubeletOwner: string;
  readonly kubeletResourcesFile: string | null;
  readonly as: string | null;
  readonly env: Environment;
  private readonly options: SessionOptions;
  private cached: {
    port?: SysfsPort;
    sim?: SimulatedRoot;
    policy?: Policy;
    subject?: Subject;
    users?: UserDatabase;
    kernelRelease?: string | null;
    resources?: ResourceRules | null;
  } = {};

  constructor(options: SessionOptions = {}) {
    this.options = options;
    this.env = options.env ?? process.env;
    const env = this.env;
    if (options.port) {
      this.root = options.port.root;
      this.rootArg = options.root ?? this.root;
      this.simulate = isSimulatedPort(options.port);
      this.cached.port = options.port;
    } else {
      this.rootArg = options.root ?? '/';
      this.simulate = options.simulate ?? false;
      if (this.simulate && isTarball(this.rootArg)) {
        throw new IsogroupError(
          'E_USAGE',
          `--simulate needs a writable directory, not the capture ${this.rootArg}; run \`isogroup sim unpack ${this.rootArg} --out DIR\` first`,
          { root: this.rootArg },
        );
      }
      const cacheDir = env.ISOGROUP_CACHE ?? path.join(os.homedir(), '.cache', 'isogroup', 'roots');
      const dir = rootDirectory(this.rootArg, cacheDir);
      // The fixture kernel keeps its own files in its root: never the live host's /.
      this.root = this.simulate ? realDirectory(dir) : dir;
    }
    this.live = this.root === '/';
    if (this.simulate && this.live) {
      throw new IsogroupError('E_USAGE', '--simulate needs --root DIR (a fixture root, see `isogroup sim unpack`), not the live host', {});
    }
    this.writable = this.simulate || this.live;
    const simDir = path.join(this.root, SIM_DIR);
    this.stateDir =
      options.stateDir !== undefined ? path.resolve(options.stateDir) : this.simulate ? path.join(simDir, 'state') : this.live ? DEFAULT_STATE_DIR : null;
    this.socket =
      options.socket !== undefined ? path.resolve(options.socket) : this.simulate ? path.join(simDir, 'isogroup.sock') : this.live ? DEFAULT_SOCKET : null;
    this.policyFile =
      options.policyFile !== undefined ? (options.policyFile === null ? null : path.resolve(options.policyFile)) : path.join(this.root, POLICY_FILE);
    const place = (given: string | undefined, sim: string, live: string): string | null =>
      given !== undefined ? path.resolve(given) : this.simulate ? path.join(simDir, sim) : this.live ? live : null;
    this.kubeletDir = place(options.kubeletDir, 'device-plugins', DEFAULT_KUBELET_DIR);
    this.cdiDir = place(options.cdiDir, 'cdi', DEFAULT_CDI_DIR);
    this.kubeletOwner = options.kubeletOwner ?? DEFAULT_KUBELET_OWNER;
    if (!isOwnerName(this.kubeletOwner))
      throw new IsogroupError('E_USAGE', `--kubelet-owner ${JSON.stringify(this.kubeletOwner)} is not an owner name (${OWNER_NAME_RULE})`, {
        owner: this.kubeletOwner,
      });
    this.kubeletResourcesFile = options.kubeletResources ? path.resolve(options.kubeletResources) : null;
    this.as = options.as ?? null;
    if (this.as !== null && !isOwnerName(this.as))
      throw new IsogroupError('E_USAGE', `--as ${JSON.stringify(this.as)} is not an owner name (${OWNER_NAME_RULE})`, { as: this.as });
  }

  /** The root's files: a plain reader, or the fixture kernel's port under --simulate. */
  port(): SysfsPort {
    this.cached.port ??= this.simulate ? this.sim().port : new NodeSysfsPort(this.root);
    return this.cached.port;
  }

  /** The fixture kernel over this root (--simulate only). */
  sim(): SimulatedRoot {
    if (!this.simulate) throw new IsogroupError('E_USAGE', `${this.rootArg} is not simulated: use --simulate`, { root: this.rootArg });
    if (!this.cached.sim) {
      const port = this.cached.port;
      const env = this.env;
      const hooks = crashHooks({
        killAfter: intOrUndefined(env.ISOGROUP_SIM_KILL_AFTER),
        pauseAfter: intOrUndefined(env.ISOGROUP_SIM_PAUSE_AFTER),
        pauseFile: env.ISOGROUP_SIM_PAUSE_FILE,
      });
      if (port && isSimulatedPort(port)) this.cached.sim = { kernel: port.kernel, port, vfio: new SimulatedVfioBackend(port.kernel) };
      else this.cached.sim = openSimulatedRoot(this.root, { hooks });
    }
    return this.cached.sim;
  }

  /** /dev/vfio: the kernel's on the live host, the fixture kernel's under --simulate. */
  vfio(): VfioBackend {
    if (this.simulate) return this.sim().vfio;
    if (this.live) return new KernelVfioBackend();
    throw new IsogroupError('E_USAGE', `${this.rootArg} is not the live host: nothing there can hold a group. Use --simulate to run on the fixture kernel`, {
      root: this.rootArg,
    });
  }

  moduleLoader(): ModuleLoader | null {
    if (this.options.moduleLoader !== undefined) return this.options.moduleLoader;
    if (this.simulate) {
      const kernel = this.sim().kernel;
      return { load: (m) => kernel.loadModule(m) };
    }
    return this.live ? modprobeLoader : null;
  }

  /** The policy in force: the one given, else the policy file (missing: root only; malformed: E_POLICY_INVALID). */
  policy(): Policy {
    this.cached.policy ??= this.options.policy ?? (this.policyFile === null ? defaultPolicy() : PolicyStore.open(this.policyFile).policy);
    return this.cached.policy;
  }

  /** How kubelet resources are named: the resources file's rules, or null for vendor:device. E_INVALID_INPUT for a bad file. */
  kubeletResources(): ResourceRules | null {
    if (this.cached.resources === undefined) this.cached.resources = this.kubeletResourcesFile === null ? null : loadResourceRules(this.kubeletResourcesFile);
    return this.cached.resources;
  }

  /** A directory the kubelet's side needs, or a usage error naming what needs it. */
  requireKubeletPlace(which: 'kubeletDir' | 'cdiDir', what: string): string {
    const dir = this[which];
    if (dir !== null) return dir;
    throw new IsogroupError(
      'E_USAGE',
      `${what} needs ${which === 'kubeletDir' ? '--kubelet-dir' : '--cdi-dir'}: ${this.rootArg} is neither the live host nor simulated`,
      { root: this.rootArg, what },
    );
  }

  /** The user database names are looked up in: the fixture's own when it has one, else the host's. */
  users(): UserDatabase {
    if (!this.cached.users) {
      const own = this.simulate && fs.existsSync(path.join(this.root, 'etc/passwd'));
      this.cached.users = readUserDatabase(own ? this.root : '/');
    }
    return this.cached.users;
  }

  /** Who asks. */
  subject(): Subject {
    this.cached.subject ??= this.options.subject ?? subjectForIds(process.getuid?.() ?? 0, process.getgid?.() ?? 0, this.users());
    return this.cached.subject;
  }

  /** Who gets a group: --to, else the user who ran sudo (when running as root under sudo), else the one asking. */
  owner(): string {
    const subject = this.subject();
    const sudoUser = this.options.subject === undefined && subject.uid === 0 ? this.env.SUDO_USER : undefined;
    const owner = this.options.owner ?? (sudoUser || subject.name);
    if (!isOwnerName(owner)) throw new IsogroupError('E_USAGE', `owner ${JSON.stringify(owner)} is not a valid name (${OWNER_NAME_RULE})`, { owner });
    return owner;
  }

  /** The subject for a uid/gid the kernel vouched for (a socket peer's SO_PEERCRED). */
  subjectForIds(uid: number, gid: number): Subject {
    return subjectForIds(uid, gid, this.users());
  }

  /** The subject an owner name stands for (policy checks on a receiving owner), by name only when the database has no such user. */
  subjectForOwner(owner: string): Subject {
    return subjectForName(owner, this.users()) ?? { name: owner, uid: -1, gids: [] };
  }

  kernelRelease(): string | null {
    if (this.options.kernelRelease !== undefined) return this.options.kernelRelease;
    if (this.cached.kernelRelease === undefined) this.cached.kernelRelease = readKernelRelease(this.port());
    return this.cached.kernelRelease;
  }

  /** pci.ids for device names. */
  pciIds(): PciIds | null {
    if (this.options.pciIds !== undefined) return this.options.pciIds;
    const paths = this.env.ISOGROUP_PCI_IDS ? [this.env.ISOGROUP_PCI_IDS] : DEFAULT_PCI_IDS_PATHS;
    const key = paths.join('\0');
    if (hostPciIds?.key !== key) hostPciIds = { key, ids: loadPciIds(paths) };
    return hostPciIds.ids;
  }

  /** Each IOMMU unit's capabilities (address width), from its registers where the root has them. */
  iommuCaps(snap: HostSnapshot): Map<string, IommuUnitCaps> {
    return unitCapsOf(readIommuRegisters(this.port(), snap));
  }

  /** The state directory, or a usage error naming what needs one. */
  requireState(what: string): string {
    if (this.stateDir !== null) return this.stateDir;
    throw new IsogroupError(
      'E_USAGE',
      `${what} needs isogroup's state, and ${this.rootArg} is not the live host: use --simulate (the fixture's own state) or --state-dir DIR; the live host's state is never read for another root`,
      { root: this.rootArg, what },
    );
  }

  /** Refuse writes where they would reach no kernel. */
  requireWritable(what: string): void {
    if (this.writable) return;
    throw new IsogroupError(
      'E_USAGE',
      `${this.rootArg} is not the live host: ${what} would write where no kernel reads. Use --simulate (the fixture kernel) or --dry-run`,
      { root: this.rootArg, what },
    );
  }

  /** This session, with who asks or who gets a group (or the view, the policy, names) set anew; the root and its state stay. */
  with(overrides: SessionOverrides): Session {
    const { session: _ignored, ...options } = this.options;
    return new Session({
      ...options,
      root: this.rootArg,
      port: this.port(),
      ...(this.stateDir !== null ? { stateDir: this.stateDir } : {}),
      ...(this.socket !== null ? { socket: this.socket } : {}),
      policyFile: this.policyFile,
      ...(this.kubeletDir !== null ? { kubeletDir: this.kubeletDir } : {}),
      ...(this.cdiDir !== null ? { cdiDir: this.cdiDir } : {}),
      kubeletOwner: this.kubeletOwner,
      kubeletResources: this.kubeletResourcesFile,
      ...overrides,
    });
  }

  /**
   * The same session for a request the daemon serves: the peer asks, for the owner it names (else
   * itself), under the daemon's policy in force; `as` gives the peer's own view.
   */
  forRequest(request: { subject: Subject; owner?: string; policy?: Policy; as?: string }): Session {
    return this.with({
      policy: request.policy ?? this.policy(),
      subject: request.subject,
      owner: request.owner ?? request.subject.name,
      ...(request.as !== undefined ? { as: request.as } : {}),
    });
  }

  /** What the action thread needs to open this session again. */
  wire(): SessionWire {
    return { root: this.root, simulate: this.simulate, stateDir: this.stateDir };
  }
}

const realDirectory = (dir: string): string => {
  try {
    return fs.realpathSync(dir);
  } catch {
    return dir;
  }
};

/** What may be set on a session already open: who asks and for whom, not where. */
export type SessionOverrides = Pick<SessionOptions, 'owner' | 'subject' | 'as' | 'policy' | 'kernelRelease' | 'pciIds'>;
const OVERRIDES = ['owner', 'subject', 'as', 'policy', 'kernelRelease', 'pciIds'] as const;
const PLACES = [
  'root',
  'simulate',
  'stateDir',
  'socket',
  'policyFile',
  'port',
  'moduleLoader',
  'env',
  'kubeletDir',
  'cdiDir',
  'kubeletOwner',
  'kubeletResources',
] as const;

/** Resolve options into a session, or take the one already open (with who asks and for whom set anew). */
export const openSession = (options: SessionOptions | Session = {}): Session => {
  if (options instanceof Session) return options;
  const open = options.session;
  if (!open) return new Session(options);
  const places = PLACES.filter((k) => options[k] !== undefined);
  if (places.length)
    throw new IsogroupError('E_USAGE', `a session is already open: ${places.join(', ')} cannot be set again (open another session)`, { options: places });
  const overrides: SessionOverrides = {};
  for (const k of OVERRIDES) if (options[k] !== undefined) (overrides as Record<string, unknown>)[k] = options[k];
  return Object.keys(overrides).length ? open.with(overrides) : open;
};
