import type { DevicesResult, ShowResult } from '../../api/devices.js';
import { shortBdf } from '../../model/bdf.js';
import { table } from '../io.js';

export const renderDevices = (result: DevicesResult): string => {
  const rows = result.devices.map((d) => [
    d.bdf,
    d.class.slice(2, 6),
    `${d.vendor.slice(2)}:${d.device.slice(2)}`,
    d.driver,
    d.driverOverride,
    d.kernelGroup,
    d.portType,
    d.acs ? d.acs.ctrlBits.join('|') || 'none' : d.acsKnown ? (d.portType === 'conventional' ? 'n/a' : 'no cap') : '?',
    d.parent ? shortBdf(d.parent) : d.rootBus,
    [d.vendorName, d.deviceName].filter(Boolean).join(' ') || d.className,
  ]);
  const lines = [table(['BDF', 'CLASS', 'ID', 'DRIVER', 'OVERRIDE', 'GROUP', 'TYPE', 'ACS-CTL', 'PARENT', 'NAME'], rows)];
  const problems = [...result.problems, ...result.devices.flatMap((d) => d.problems)];
  if (!result.iommuEnabled) lines.push('', 'note: no IOMMU is active under this root (no /sys/class/iommu entries, no kernel groups)');
  if (problems.length) lines.push('', `${problems.length} problem(s):`, ...problems.map((p) => `  ${p.code}: ${p.message}`));
  return lines.join('\n');
};

export const renderShow = (r: ShowResult): string => {
  const d = r.device;
  const lines = [
    `${d.bdf}  ${[d.vendorName, d.deviceName].filter(Boolean).join(' ') || d.className || ''}`.trimEnd(),
    `  ids:        ${d.vendor}:${d.device} subsystem ${d.subsystemVendor ?? '-'}:${d.subsystemDevice ?? '-'} class ${d.class} rev ${d.revision ?? '-'}`,
    `  driver:     ${d.driver ?? '(none)'}${d.driverOverride ? ` (driver_override=${d.driverOverride})` : ''}${d.vfioDriver ? ' [vfio]' : ''}`,
    `  group:      ${d.kernelGroup ?? '(none)'}${r.kernelGroup ? ` members ${r.kernelGroup.devices.join(' ')}` : ''}`,
    `  derived:    ${r.groups.derived ? `group ${r.groups.derived.id} members ${r.groups.derived.devices.join(' ')}` : '(none: not translated by the IOMMU)'}`,
    ...(r.groups.reason ? [`  why:        ${r.groups.reason.message} [${r.groups.reason.rule}]`] : []),
    ...r.groups.cannotDerive.map((c) => `  note:       ${c}`),
    `  iommu:      ${d.iommu ?? '(none)'}   numa node: ${d.numaNode ?? '-'}`,
    `  type:       ${d.portType}${d.isBridge ? ` bridge, buses ${d.secondaryBus}-${d.subordinateBus}` : ''}${d.multifunction ? ', multifunction' : ''}`,
    `  acs:        ${d.acs ? `cap ${d.acs.cap} [${d.acs.capBits.join(' ')}] ctrl ${d.acs.ctrl} [${d.acs.ctrlBits.join(' ')}]` : d.acsKnown ? 'no ACS capability' : 'unknown (config space too short)'}`,
    `  sr-iov:     ${d.sriov ? `${d.sriov.numVfs}/${d.sriov.totalVfs} VFs (VF id ${d.sriov.vfDeviceId})` : d.physfn ? `VF of ${d.physfn}` : '-'}`,
    `  reset:      ${d.resetMethods.join(' ') || '-'}`,
    `  config:     ${d.configSize} bytes, ${d.sysfsPath}`,
    '  capabilities:',
    ...d.capabilities.map((c) => `    [${c.offset.slice(2)}] ${c.name}`),
    ...d.extCapabilities.map((c) => `    [${c.offset.slice(2)} v${c.version}] ${c.name}`),
    '  path to root bus:',
    ...r.path.map((p) => `    ${p.bdf} ${p.portType} driver=${p.driver ?? '-'} acs=${p.acs ? p.acs.ctrlBits.join('|') || 'none' : 'no cap'}`),
    `    ${r.rootBus}`,
  ];
  if (d.problems.length) lines.push('  problems:', ...d.problems.map((p) => `    ${p.code}: ${p.message}`));
  return lines.join('\n');
};
