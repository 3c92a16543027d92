import type { CdiResult } from '../../api/kubernetes.js';

export const renderCdi = (r: CdiResult): string =>
  r.file === null
    ? r.yaml
    : `wrote ${r.file}: ${r.spec.devices.length} device(s) of kind ${r.spec.kind} (the groups assigned to ${r.owner}${
        r.spec.devices.length ? `: ${r.spec.devices.map((d) => d.name).join(', ')}` : ''
      })`;
