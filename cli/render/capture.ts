import type { ImportResult, SnapshotResult } from '../../api/capture.js';

export const renderImport = (result: ImportResult): string => {
  const synth = result.devices.filter((d) => d.synthesizedExtended).length;
  const lines = [
    `imported ${result.devices.length} devices, ${Object.keys(result.groups).length} kernel groups into ${result.root}`,
    `iommu unit: ${result.iommuUnit ?? '(none)'}; extended config synthesized from decoded text for ${synth} device(s)`,
  ];
  if (result.problems.length) lines.push(`${result.problems.length} problem(s):`, ...result.problems.map((p) => `  ${p.code}: ${p.message}`));
  return lines.join('\n');
};

export const renderSnapshot = (result: SnapshotResult): string => {
  const lines = [`wrote ${result.out}: ${result.devices} devices, ${result.groups} groups, ${result.members} tar members`];
  if (result.errors.length)
    lines.push(
      `${result.errors.length} file(s) could not be read (stored empty, listed in meta/snapshot.json):`,
      ...result.errors.slice(0, 20).map((e) => `  ${e}`),
    );
  return lines.join('\n');
};
