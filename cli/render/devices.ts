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
    `${d.resetSource === 'derived' ? '~' : ''}${d.resetMethods.join(',') || 'none'}`,
    [d.vendorName, d.deviceName].filter(Boolean).join(' ') || d.className,
  ]);
  const lines = [table(['BDF', 'CLASS', 'ID', 'DRIVER', 'OVERRIDE', 'GROUP', 'TYPE', 'ACS-CTL', 'PARENT', 'RESET', 'NAME'], rows)];
  if (result.devices.some((d) => d.resetSource === 'derived'))
    lines.push('', "RESET: the kernel's reset_method; ~ marks methods derived from config space and topology (the input has no reset_method)");
  for (const n of result.notes) lines.push(`note: ${n}`);
  const problems = [...result.problems, ...result.devices.flatMap((d) => d.problems)];
  if (!result.iommuEnabled) lines.push('', 'note: no IOMMU is active under this root (no /sys/class/iommu entries, no kernel groups)');
  if (problems.length) lines.push('', `${problems.length} problem(s):`, ...problems.map((p) => `  ${p.code}: ${p.message}`));
  return lines.join('\n');
};

const ALONE: Record<DevicesResult['devices'][number]['resetAlone'], string> = {
  function: 'yes (a function reset)',
  pm: 'yes, by a PM reset only (D3hot->D0, which some devices ignore)',
  bus: 'yes (alone on its bus, a bus reset reaches only it)',
  none: 'no (only a bus reset, if any, can reset it)',
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
    `  reset:      ${d.resetMethods.join(' ') || 'none'} (${d.resetSource === 'kernel' ? "the kernel's reset_method" : 'derived: the input has no reset_method'}); alone: ${ALONE[d.resetAlone]}`,
    ...(d.resetSource === 'kernel' && d.resetDerived !== null ? [`              derived: ${d.resetDerived.join(' ') || 'none'}`] : []),
    ...d.resetDiffers.map((x) => `              differs: ${x}`),
    ...r.reset.reasons.map((x) => `              ${x}`),
    `  bus reset:  ${d.resetScope.length ? `${r.reset.scopeWhy}: ${d.resetScope.map(shortBdf).join(' ')}` : `none: ${r.reset.scopeWhy}`}`,
    ...(r.reset.group
      ? [
          `  group ${r.reset.group.id}:   ${r.reset.group.canResetAlone ? 'can be reset alone' : 'CANNOT be reset alone'}${r.reset.group.groupsAffected.length ? `; a bus reset reaches group(s) ${r.reset.group.groupsAffected.join(', ')}` : ''}`,
          ...r.reset.group.warnings.map((w) => `              ${w}`),
        ]
      : []),
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
