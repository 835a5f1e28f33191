//! The PVH boot protocol (Xen's, also used by QEMU, Firecracker and cloud-hypervisor to boot
//! Linux directly): an ELF names a 32-bit entry point in a `XEN_ELFNOTE_PHYS32_ENTRY` note; the
//! VMM starts it in 32-bit protected mode, paging off, with EBX = the physical address of an
//! `hvm_start_info` (magic 0x336ec578) that points at the memory map and the command line.
//!
//! The structures and the code that writes them are linux-loader's.

use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::elf::start_info::{hvm_memmap_table_entry, hvm_start_info};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::{BOOT_MEMORY_MAP_OFFSET, LoaderError, ram_size, write_cmdline};
use crate::arch::x86::layout::{BOOT_INFO_ADDRESS, INITIAL_STACK_TOP, memory_map};
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
    let ram_size = ram_size(memory);
    let map: Vec<hvm_memmap_table_entry> = memory_map(ram_size)
        .into_iter()
        .map(|(addr, size, kind)| hvm_memmap_table_entry {
            addr,
            size,
            type_: kind.e820_type(),
            reserved: 0,
        })
        .collect();
    let map_address = BOOT_INFO_ADDRESS + BOOT_MEMORY_MAP_OFFSET;
    let start_info = hvm_start_info {
        magic: START_INFO_MAGIC,
        version: 1,
        cmdline_paddr: write_cmdline(memory, cmdline)?,
        memmap_paddr: map_address,
        memmap_entries: map.len() as u32,
        ..Default::default()
    };
    let mut params = BootParams::new(&start_info, GuestAddress(BOOT_INFO_ADDRESS));
    params.set_sections(&map, GuestAddress(map_address));
    PvhBootConfigurator::write_bootparams(&params, memory)?;
    Ok(EntryRegisters {
        entry,
        stack: INITIAL_STACK_TOP,
        rax: 0,
        rbx: BOOT_INFO_ADDRESS,
        rsi: 0,
    })
}
