import { KERNEL_RELEASE_FILES } from './paths.js';
import type { SysfsPort } from './port.js';

/** The running (or captured) kernel's release: meta/uname of a capture, or proc/sys/kernel/osrelease. */
export const readKernelRelease = (port: SysfsPort): string | null => {
  for (const file of KERNEL_RELEASE_FILES) {
    try {
      const words = port.readText(file).trim().split(/\s+/);
      const release = words[0] === 'Linux' ? words[2] : words[0];
      if (release && /^\d+\.\d+/.test(release)) return release;
    } catch {
      /* not there */
    }
  }
  return null;
};
