//! The PVH boot protocol (Xen's, also used by QEMU, Firecracker and cloud-hypervisor to boot
//! Linux directly): an ELF names a 32-bit entry point in a `XEN_ELFNOTE_PHYS32_ENTRY` note; the
//! VMM starts it in 32-bit protected mode, paging off, with EBX = the physical address of an
//! `hvm_start_info` (magic 0x336ec578) that points at the memory map and the command line, and
//! for Linux also at the initramfs (the first module) and the ACPI tables' RSDP.
//!
//! The structures and the code that writes them are linux-loader's.

use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::linux::linux_memory_map;
use super::{BOOT_MEMORY_MAP_OFFSET, BOOT_MODULES_OFFSET, LoaderError, ram_size, write_cmdline};
use crate::arch::x86::layout::{
    ACPI_RSDP_ADDRESS, BOOT_INFO_ADDRESS, INITIAL_STACK_TOP, MemoryKind, memory_map,
};
use crate::arch::x86::modes::EntryRegisters;

/// `hvm_start_info.magic`: "xEn3" with the high bit of each byte cleared.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;

/// Writes `hvm_start_info`, the memory map and the command line; returns the entry registers
/// for the PVH entry point `entry`.
pub fn prepare(
    memory: &GuestMemoryMmap,
    entry: u64,
    cmdline: &str,
) -> Result<EntryRegisters, LoaderError> {
    let map = memory_map(ram_size(memory));
    write_start_info(memory, entry, cmdline, &map, None, 0)
}

/// The same for Linux's vmlinux: Linux's memory map (the legacy hole left out), the initramfs
/// as the first module, and the RSDP's address (the ACPI tables: arch/x86/acpi.rs).
pub fn prepare_linux(
    memory: &GuestMemoryMmap,
    entry: u64,
    cmdline: &str,
    initrd: Option<(u64, u64)>,
) -> Result<EntryRegisters, LoaderError> {
    let map = linux_memory_map(ram_size(memory));
    write_start_info(memory, entry, cmdline, &map, initrd, ACPI_RSDP_ADDRESS)
}

fn write_start_info(
    memory: &GuestMemoryMmap,
    entry: u64,
    cmdline: &str,
    map: &[(u64, u64, MemoryKind)],
    initrd: Option<(u64, u64)>,
    rsdp: u64,
) -> Result<EntryRegisters, LoaderError> {
    let map: Vec<hvm_memmap_table_entry> = map
        .iter()
        .map(|&(addr, size, kind)| hvm_memmap_table_entry {
            addr,
            size,
            type_: kind.e820_type(),
            reserved: 0,
        })
        .collect();
    let modules: Vec<hvm_modlist_entry> = initrd
        .into_iter()
        .map(|(paddr, size)| hvm_modlist_entry {
            paddr,
            size,
            ..Default::default()
        })
        .collect();
    let map_address = BOOT_INFO_ADDRESS + BOOT_MEMORY_MAP_OFFSET;
    let modules_address = BOOT_INFO_ADDRESS + BOOT_MODULES_OFFSET;
    let start_info = hvm_start_info {
        magic: START_INFO_MAGIC,
        version: 1,
        cmdline_paddr: write_cmdline(memory, cmdline)?,
        memmap_paddr: map_address,
        memmap_entries: map.len() as u32,
        nr_modules: modules.len() as u32,
        modlist_paddr: if modules.is_empty() {
            0
        } else {
            modules_address
        },
        rsdp_paddr: rsdp,
        ..Default::default()
    };
    let mut params = BootParams::new(&start_info, GuestAddress(BOOT_INFO_ADDRESS));
    params.set_sections(&map, GuestAddress(map_address));
    if !modules.is_empty() {
        params.set_modules(&modules, GuestAddress(modules_address));
    }
    PvhBootConfigurator::write_bootparams(&params, memory)?;
    Ok(EntryRegisters {
        entry,
        stack: INITIAL_STACK_TOP,
        rax: 0,
        rbx: BOOT_INFO_ADDRESS,
        rsi: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86::layout::MAX_MEMORY_SIZE;

    /// The memory map (from 0x100 in the boot-information page) ends before the module list
    /// (0x1c0), for every RAM size mini-kvm accepts: the largest maps are those with RAM above
    /// 4 GiB.
    #[test]
    fn the_memory_map_fits_below_the_module_list() {
        let room = (BOOT_MODULES_OFFSET - BOOT_MEMORY_MAP_OFFSET) as usize;
        let entry = std::mem::size_of::<hvm_memmap_table_entry>();
        for map in [
            memory_map(MAX_MEMORY_SIZE),
            linux_memory_map(MAX_MEMORY_SIZE),
        ] {
            assert!(map.len() * entry <= room, "{} entries", map.len());
        }
    }
}
