//! Page tables the VMM builds in guest memory (docs/memory-map.md, "Page tables").
//!
//! - 32-bit protected mode with `--paging`: one page directory of 4 MiB pages (PSE, CR4.PSE),
//!   mapping guest RAM twice: at its own address (identity) and again at 0x80000000, where a
//!   "higher half" kernel would live.
//! - Long mode: PML4 → PDPT → page directories of 2 MiB pages, identity-mapping guest RAM up to
//!   4 GiB. (Long mode cannot run without paging, so every 64-bit guest gets these.)

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::ArchError;
use super::layout::PAGE_TABLES_ADDRESS;

/// Entry bits common to every level: present, writable.
const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
/// In a page directory entry: this entry maps a large page (4 MiB, or 2 MiB in long mode).
const LARGE_PAGE: u64 = 1 << 7;

/// Where the 32-bit alias of guest RAM starts.
pub const HIGH_ALIAS: u64 = 0x8000_0000;
/// The 32-bit identity map stops at the alias: at most 2 GiB of RAM is mapped.
const PSE_MAP_LIMIT: u64 = HIGH_ALIAS;
const PAGE_4M: u64 = 4 << 20;

/// The long-mode map covers RAM up to 4 GiB: one PDPT entry, i.e. one page directory, per GiB.
const LONG_MAP_LIMIT: u64 = 4 << 30;
const PAGE_2M: u64 = 2 << 20;
const GIB: u64 = 1 << 30;

/// Writes a 32-bit page directory of 4 MiB pages; returns the CR3 value.
pub fn write_pse_tables(memory: &GuestMemoryMmap, ram_size: u64) -> Result<u64, ArchError> {
    let mapped = ram_size.min(PSE_MAP_LIMIT);
    let mut directory = [0u32; 1024];
    let alias_first = (HIGH_ALIAS / PAGE_4M) as usize;
    for (index, page) in (0..mapped.div_ceil(PAGE_4M)).enumerate() {
        let entry = ((page * PAGE_4M) | LARGE_PAGE | WRITABLE | PRESENT) as u32;
        directory[index] = entry;
        directory[alias_first + index] = entry;
    }
    let bytes: Vec<u8> = directory.iter().flat_map(|e| e.to_le_bytes()).collect();
    memory.write_slice(&bytes, GuestAddress(PAGE_TABLES_ADDRESS))?;
    Ok(PAGE_TABLES_ADDRESS)
}

/// Writes 4-level long-mode tables with 2 MiB pages; returns the CR3 value.
///
/// Layout from PAGE_TABLES_ADDRESS: PML4 (one page), PDPT (one page), then one page directory
/// per GiB mapped (up to four).
pub fn write_long_mode_tables(memory: &GuestMemoryMmap, ram_size: u64) -> Result<u64, ArchError> {
    let pml4 = PAGE_TABLES_ADDRESS;
    let pdpt = pml4 + 0x1000;
    let first_directory = pdpt + 0x1000;
    let mapped = ram_size.min(LONG_MAP_LIMIT).div_ceil(PAGE_2M) * PAGE_2M;

    memory.write_obj(pdpt | WRITABLE | PRESENT, GuestAddress(pml4))?;
    for gib in 0..mapped.div_ceil(GIB) {
        let directory = first_directory + gib * 0x1000;
        memory.write_obj(directory | WRITABLE | PRESENT, GuestAddress(pdpt + gib * 8))?;
        let mut entries = [0u64; 512];
        for (index, entry) in entries.iter_mut().enumerate() {
            let address = gib * GIB + index as u64 * PAGE_2M;
            if address < mapped {
                *entry = address | LARGE_PAGE | WRITABLE | PRESENT;
            }
        }
        let bytes: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
        memory.write_slice(&bytes, GuestAddress(directory))?;
    }
    Ok(pml4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create_guest_memory(size: usize) -> Option<GuestMemoryMmap> {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).ok()
    }

    #[test]
    fn pse_identity_and_alias() {
        let memory = create_guest_memory(8 << 20).unwrap();
        let cr3 = write_pse_tables(&memory, 8 << 20).unwrap();
        let entry = |i: u64| memory.read_obj::<u32>(GuestAddress(cr3 + i * 4)).unwrap();
        assert_eq!(entry(0), 0x83);
        assert_eq!(entry(1), 0x0040_0083);
        assert_eq!(entry(2), 0);
        assert_eq!(entry(512), 0x83);
        assert_eq!(entry(513), 0x0040_0083);
    }

    #[test]
    fn long_mode_maps_ram_in_2m_pages() {
        let memory = create_guest_memory(1 << 20).unwrap();
        let cr3 = write_long_mode_tables(&memory, 1 << 20).unwrap();
        let read = |a: u64| memory.read_obj::<u64>(GuestAddress(a)).unwrap();
        assert_eq!(read(cr3), (cr3 + 0x1000) | 3);
        assert_eq!(read(cr3 + 0x1000), (cr3 + 0x2000) | 3);
        assert_eq!(read(cr3 + 0x2000), 0x83);
        assert_eq!(read(cr3 + 0x2008), 0);
    }
}
