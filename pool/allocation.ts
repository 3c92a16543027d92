// What a container gets for its pool groups: the device nodes (the VFIO container, each group's node,
// iommufd and the per-device cdevs where the kernel has them), KubeVirt's PCI_RESOURCE_ variable and
// the CDI device names. The same nodes make up each group's entry in the CDI spec (pool/cdi.ts).

import { IOMMUFD_DEV, VFIO_CONTAINER, vfioDeviceCdev, vfioGroup } from '../sysfs/paths.js';
import type { PoolDevice } from './devices.js';
import { CDI_KIND, pciResourceEnv } from './resources.js';

/** Read and write only: the container opens the nodes, it never creates any. */
export const NODE_PERMISSIONS = 'rw';

export interface NodeFacts {
  /** The host path of a root-relative node ("/dev/vfio/5" on the live host, ROOT/dev/vfio/5 on a fixture). */
  hostPath: (rel: string) => string;
  /** /dev/iommu exists (iommufd). */
  iommufd: boolean;
}

export interface DeviceNodeSpec {
  containerPath: string;
  hostPath: string;
  permissions: string;
}

export interface ContainerAllocation {
  envs: Record<string, string>;
  devices: DeviceNodeSpec[];
  cdiDevices: string[];
}

const node = (rel: string, facts: NodeFacts): DeviceNodeSpec => ({ containerPath: `/${rel}`, hostPath: facts.hostPath(rel), permissions: NODE_PERMISSIONS });

/** The nodes every VFIO user needs once, whatever its groups. */
export const sharedNodes = (facts: NodeFacts): DeviceNodeSpec[] => [node(VFIO_CONTAINER, facts), ...(facts.iommufd ? [node(IOMMUFD_DEV, facts)] : [])];

/** The nodes of one group: /dev/vfio/N and its endpoints' cdevs. */
export const groupNodes = (group: PoolDevice, facts: NodeFacts): DeviceNodeSpec[] => [
  node(vfioGroup(group.id), facts),
  ...group.cdevs.map((c) => node(vfioDeviceCdev(c), facts)),
];

/** The CDI name of a pool group. */
export const cdiName = (groupId: string): string => `${CDI_KIND}=${groupId}`;

/**
 * The addresses for PCI_RESOURCE_<NAME>: each group's first endpoint, in allocation order, then the
 * other endpoints. KubeVirt takes one address per requested device from the front of the list, so
 * each device it asks for is a different group's primary function.
 */
export const resourceAddresses = (groups: readonly PoolDevice[]): string[] => [
  ...groups.flatMap((g) => g.endpoints.slice(0, 1)),
  ...groups.flatMap((g) => g.endpoints.slice(1)),
];

/** The answer to Allocate for one container. */
export const containerAllocation = (resource: string, groups: readonly PoolDevice[], facts: NodeFacts): ContainerAllocation => ({
  envs: { [pciResourceEnv(resource)]: resourceAddresses(groups).join(',') },
  devices: [...sharedNodes(facts), ...groups.flatMap((g) => groupNodes(g, facts))],
  cdiDevices: groups.map((g) => cdiName(g.id)),
});
