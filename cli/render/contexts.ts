import type { ContextsListResult } from '../../api/contexts.js';
import type { ContextView } from '../../groups/context.js';
import { shortBdf } from '../../model/bdf.js';
import { table } from '../io.js';

export const renderContextList = (result: ContextsListResult): string =>
  result.contexts.length
    ? table(
        ['CONTEXT', 'OWNER', 'GROUPS', 'DEVICES'],
        result.contexts.map((c) => [c.id, c.owner, c.groups.join(' '), c.devices]),
      )
    : 'no contexts';

export const renderContextView = (v: ContextView & { kernel?: Record<string, unknown> | null }): string => {
  const c = v.context;
  const lines = [
    `context ${c.id} of ${c.owner}: ${c.groups.length} group(s), ${c.devices.filter((d) => d.present).length} device(s)`,
    ...c.groups.map((g) => `  group ${g.id}: ${g.devices.map(shortBdf).join(' ')}  [${g.iommuUnits.join(' ') || 'no IOMMU unit'}]`),
    "  devices (context-local numbers, stable for the context's life):",
    table(
      ['  #', 'BDF', 'GROUP', 'DRIVER'],
      c.devices.map((d) => [`  ${d.index}`, d.bdf, d.group, d.present ? d.driver : '(gone)']),
    ),
    `  usable IOVA (aperture ${c.aperture.start}-${c.aperture.end} minus reserved regions):`,
    ...c.iovaRanges.map((r) => `    ${r.start} - ${r.end}`),
    ...(v.kernel ? [`  kernel (VFIO_IOMMU_GET_INFO): ${v.kernel.match === true ? 'same ranges' : JSON.stringify(v.kernel)}`] : []),
    ...c.notes.map((n) => `  note: ${n.message}`),
  ];
  return lines.join('\n');
};
