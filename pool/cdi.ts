// The Container Device Interface spec for the pool: kind isogroup.io/group, one device per pool group
// named by its group number, each carrying every node a VFIO user of that group opens (so a runtime
// given `--device isogroup.io/group=N` needs nothing else). 0.5.0 is the first version with hostPath,
// which a fixture root needs (its nodes are not at /dev).

import { groupNodes, type NodeFacts, sharedNodes } from './allocation.js';
import type { PoolDevice } from './devices.js';
import { CDI_KIND } from './resources.js';

export const CDI_VERSION = '0.5.0';
/** The spec's file name in a CDI directory (/etc/cdi). */
export const CDI_SPEC_FILE = 'isogroup.io.yaml';

export interface CdiDeviceNode {
  path: string;
  hostPath?: string;
  permissions: string;
}

export interface CdiSpec {
  cdiVersion: string;
  kind: string;
  devices: { name: string; containerEdits: { deviceNodes: CdiDeviceNode[] } }[];
}

export const cdiSpec = (pool: readonly PoolDevice[], facts: NodeFacts): CdiSpec => ({
  cdiVersion: CDI_VERSION,
  kind: CDI_KIND,
  devices: pool.map((g) => ({
    name: g.id,
    containerEdits: {
      deviceNodes: [...sharedNodes(facts), ...groupNodes(g, facts)].map((n) => ({
        path: n.containerPath,
        ...(n.hostPath !== n.containerPath ? { hostPath: n.hostPath } : {}),
        permissions: n.permissions,
      })),
    },
  })),
});
