//! Guest RAM and the guest-physical memory layout.
//!
//! Guest RAM is one anonymous mapping in the VMM process (vm-memory's `GuestMemoryMmap`, mapped
//! with `MAP_NORESERVE`: the host only gives it pages the guest touches), registered with KVM as
//! memory slot 0 at guest-physical address 0.

use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// Where a flat real-mode image is loaded: segment 0x1000, offset 0.
pub const REAL_MODE_SEGMENT: u16 = 0x1000;
pub const REAL_MODE_LOAD_ADDRESS: u64 = (REAL_MODE_SEGMENT as u64) << 4;
/// Real mode can address 1 MiB (plus the 64 KiB "high memory area" above it, which we don't use).
pub const REAL_MODE_ADDRESS_LIMIT: u64 = 1 << 20;

/// The VMM's own tables for protected- and long-mode guests, in low guest RAM (docs/memory-map.md).
/// A guest image may not overlap `VMM_TABLES_START..VMM_TABLES_END`.
pub const VMM_TABLES_START: u64 = 0x1000;
pub const VMM_TABLES_END: u64 = 0x9000;
/// The GDT the VMM builds (src/arch/gdt.rs): 6 descriptors.
pub const GDT_ADDRESS: u64 = 0x1000;
/// A 32-bit TSS (104 bytes): KVM wants a valid task register outside real mode.
pub const TSS_ADDRESS: u64 = 0x1080;
/// One page for the boot protocols: the multiboot info or PVH `hvm_start_info`, the memory map,
/// the command line.
pub const BOOT_INFO_ADDRESS: u64 = 0x2000;
pub const BOOT_INFO_SIZE: u64 = 0x1000;
/// Page tables (src/arch/paging.rs): the 32-bit page directory, or PML4, PDPT and 4 PDs.
pub const PAGE_TABLES_ADDRESS: u64 = 0x3000;
/// Where flat protected- and long-mode images are loaded (the same address as real mode's).
pub const FLAT_LOAD_ADDRESS: u64 = REAL_MODE_LOAD_ADDRESS;
/// ESP/RSP at entry for every guest that does not start in real mode: the stack grows down from
/// the load address, below the image and above the VMM's tables.
pub const INITIAL_STACK_TOP: u64 = 0x10000;

/// Default guest RAM: 1 MiB, the whole real-mode address space.
pub const DEFAULT_MEMORY_SIZE: u64 = 1 << 20;
/// Smallest RAM we accept: the load address plus one 64 KiB segment for code, data and stack.
pub const MIN_MEMORY_SIZE: u64 = REAL_MODE_LOAD_ADDRESS + 0x10000;
/// Largest RAM we accept: far more than any guest here needs, and it keeps typos like `--mem
/// 64000G` from reaching mmap.
pub const MAX_MEMORY_SIZE: u64 = 64 << 30;

#[derive(Debug, Error)]
pub enum MemoryError {
    #[error("cannot map {size} bytes of guest memory: {source}")]
    Map {
        size: u64,
        source: vm_memory::mmap::FromRangesError,
    },
}

/// Maps `size` bytes of zeroed guest RAM at guest-physical address 0.
pub fn create_guest_memory(size: u64) -> Result<GuestMemoryMmap, MemoryError> {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size as usize)])
        .map_err(|source| MemoryError::Map { size, source })
}

/// Is `[address, address + len)` entirely guest RAM? (`len` may be 0.) Guest RAM is one
/// region starting at 0, so this is a bounds check against its end.
pub fn range_is_ram(memory: &GuestMemoryMmap, address: u64, len: u64) -> bool {
    let ram_end = memory.last_addr().0 + 1;
    address.checked_add(len).is_some_and(|end| end <= ram_end)
}

/// Reads up to `buf.len()` bytes at a guest-physical address; returns how many could be read
/// (fewer at the end of RAM, 0 outside it). Used for reports and traces, where a short read is fine.
pub fn read_prefix(memory: &GuestMemoryMmap, address: u64, buf: &mut [u8]) -> usize {
    let ram_end = memory.last_addr().0 + 1;
    if address >= ram_end {
        return 0;
    }
    let len = buf.len().min((ram_end - address) as usize);
    match memory.read_slice(&mut buf[..len], GuestAddress(address)) {
        Ok(()) => len,
        Err(_) => 0,
    }
}
