//! What every way of booting Linux shares (a bzImage through the 64-bit boot protocol,
//! bzimage.rs; an uncompressed vmlinux through its PVH entry, pvh.rs): the default command line,
//! where the initramfs goes, the memory map the kernel is told, and how to tell a vmlinux from
//! other PVH kernels.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{LoaderError, ram_size};
use crate::arch::x86::layout::{MemoryKind, low_ram_end, memory_map};

/// The command line a kernel gets when `--cmdline` is not given: its console on the UART that
/// mini-kvm connects to the terminal; on a panic, a reset at once (`panic=-1`, which ends the
/// run) marked warm (`reboot=panic_warm`), which tells mini-kvm it was a panic (src/vmm/vm.rs).
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 panic=-1 reboot=panic_warm";

/// The banner every Linux kernel carries (`linux_banner`, what `/proc/version` prints).
const LINUX_BANNER: &[u8] = b"Linux version ";

/// Is this uncompressed kernel Linux? A vmlinux carries its banner in plain text (a bzImage
/// carries it compressed, and is told apart by its setup header instead).
pub fn is_linux(image: &[u8]) -> bool {
    image
        .windows(LINUX_BANNER.len())
        .any(|window| window == LINUX_BANNER)
}

/// Puts the initramfs as high in the RAM below the MMIO hole as `limit` allows (a bzImage's
/// `initrd_addr_max` + 1), page-aligned, above `kernel_end` (for a bzImage, the end of the
/// room it decompresses into). Returns its address and size.
pub fn place_initrd(
    memory: &GuestMemoryMmap,
    name: &str,
    initrd: &[u8],
    kernel_end: u64,
    limit: u64,
) -> Result<(u64, u64), LoaderError> {
    let size = initrd.len() as u64;
    if size == 0 {
        return Err(LoaderError::InitrdEmpty {
            name: name.to_string(),
        });
    }
    let limit = low_ram_end(ram_size(memory)).min(limit);
    let address = limit.saturating_sub(size) & !0xfff;
    if address < kernel_end.next_multiple_of(0x1000) {
        return Err(LoaderError::InitrdDoesNotFit {
            name: name.to_string(),
            size,
            room: limit.saturating_sub(kernel_end),
            suggest: ((kernel_end + size) >> 20) + 16,
        });
    }
    memory.write_slice(initrd, GuestAddress(address))?;
    Ok((address, size))
}

/// The memory map Linux is told: the address map's, with the legacy hole from 640 KiB to
/// 1 MiB (where a PC has its video memory and BIOS, and mini-kvm its ACPI tables) left out, as
/// on a real PC.
pub fn linux_memory_map(ram_size: u64) -> Vec<(u64, u64, MemoryKind)> {
    const LEGACY_HOLE_START: u64 = 0xa_0000;
    const LEGACY_HOLE_END: u64 = 0x10_0000;
    let mut map = Vec::new();
    for (start, len, kind) in memory_map(ram_size) {
        let end = start + len;
        if start < LEGACY_HOLE_START && end > LEGACY_HOLE_END {
            map.push((start, LEGACY_HOLE_START - start, kind));
            map.push((LEGACY_HOLE_END, end - LEGACY_HOLE_END, kind));
        } else {
            map.push((start, len, kind));
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_legacy_hole_is_left_out_of_linuxs_map() {
        let map = linux_memory_map(64 << 20);
        assert_eq!(
            map,
            [
                (0, 0x1000, MemoryKind::Ram),
                (0x1000, 0x8000, MemoryKind::Reserved),
                (0x9000, 0xa_0000 - 0x9000, MemoryKind::Ram),
                (0x10_0000, (64 << 20) - 0x10_0000, MemoryKind::Ram),
            ]
        );
    }

    #[test]
    fn a_vmlinux_is_known_by_its_banner() {
        assert!(is_linux(b"\x7fELF...Linux version 6.1.0 (gcc)..."));
        assert!(!is_linux(b"\x7fELF...a PVH kernel of our own..."));
    }
}
