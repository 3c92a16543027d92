#!/bin/bash
# Prints the guest kernel's IOMMU groups, one line per group: N: BDF[driver] ... (debugging aid)
for g in $(ls /sys/kernel/iommu_groups | sort -n); do
  line="$g:"
  for d in /sys/kernel/iommu_groups/$g/devices/*; do
    b=$(basename "$d"); drv=-; [[ -e /sys/bus/pci/devices/$b/driver ]] && drv=$(basename "$(readlink /sys/bus/pci/devices/$b/driver)")
    line+=" $b[$drv]"
  done
  echo "$line"
done
