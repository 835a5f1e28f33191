//! Guest RAM in a snapshot: one file, the RAM regions one after the other, written sparsely
//! (a page of zeros is skipped with a seek, so it takes no disk space: a hole), and restored
//! by mapping that file copy-on-write (`MAP_PRIVATE`) as the guest's memory. A restore copies
//! nothing: the kernel reads a page from the file the first time the guest touches it, and a
//! page the guest writes becomes the process's own copy; the file never changes.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use vm_memory::mmap::MmapRegion;
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap,
};

use super::SnapshotError;
use crate::arch::x86::layout::{self, MAX_MEMORY_SIZE, MIN_MEMORY_SIZE};

const PAGE: usize = 4096;

/// One region of guest RAM: where the guest sees it, and how long it is. In the file, the
/// regions follow each other in this order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RamRegion {
    #[serde(with = "super::hex::u64_text")]
    pub guest_address: u64,
    pub size: u64,
}

/// The regions of `memory`, in order.
pub fn regions(memory: &GuestMemoryMmap) -> Vec<RamRegion> {
    memory
        .iter()
        .map(|region| RamRegion {
            guest_address: region.start_addr().0,
            size: region.len(),
        })
        .collect()
}

/// Writes guest RAM to `path`, leaving holes for pages of zeros. Returns the bytes written.
pub fn write(memory: &GuestMemoryMmap, path: &Path) -> Result<u64, SnapshotError> {
    let io = |source| SnapshotError::Io {
        what: "write the RAM file",
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::create(path).map_err(io)?;
    let mut total = 0u64;
    let mut written = 0u64;
    for region in memory.iter() {
        let slice = region
            .get_slice(vm_memory::MemoryRegionAddress(0), region.len() as usize)
            .map_err(|error| SnapshotError::Invalid(format!("guest RAM: {error}")))?;
        let mut page = [0u8; PAGE];
        for offset in (0..region.len() as usize).step_by(PAGE) {
            let len = PAGE.min(region.len() as usize - offset);
            let piece = slice
                .subslice(offset, len)
                .map_err(|error| SnapshotError::Invalid(format!("guest RAM: {error}")))?;
            piece.copy_to(&mut page[..len]);
            if page[..len].iter().any(|&byte| byte != 0) {
                file.seek(SeekFrom::Start(total + offset as u64))
                    .map_err(io)?;
                file.write_all(&page[..len]).map_err(io)?;
                written += len as u64;
            }
        }
        total += region.len();
    }
    // The file's size is all of RAM, whatever the last page held.
    file.set_len(total).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(written)
}

/// Maps the RAM file as the guest's memory, copy-on-write. Its size must be the regions' sum.
pub fn map(path: &Path, regions: &[RamRegion]) -> Result<GuestMemoryMmap, SnapshotError> {
    let io = |source| SnapshotError::Io {
        what: "open the RAM file",
        path: path.to_path_buf(),
        source,
    };
    let total: u64 = regions.iter().map(|region| region.size).sum();
    let layout: Vec<RamRegion> = layout::ram_regions(total)
        .into_iter()
        .map(|(guest_address, size)| RamRegion {
            guest_address,
            size,
        })
        .collect();
    // Only where mini-kvm puts RAM: elsewhere it would cover the devices' windows.
    if regions != layout.as_slice() || !(MIN_MEMORY_SIZE..=MAX_MEMORY_SIZE).contains(&total) {
        return Err(SnapshotError::Invalid(format!(
            "its RAM regions are not where mini-kvm puts {total} bytes of RAM"
        )));
    }
    let file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let expected: u64 = regions.iter().map(|region| region.size).sum();
    if size != expected {
        return Err(SnapshotError::RamSize {
            path: path.to_path_buf(),
            size,
            expected,
        });
    }
    let mut mapped = Vec::with_capacity(regions.len());
    let mut offset = 0u64;
    for region in regions {
        let file_offset = FileOffset::new(file.try_clone().map_err(io)?, offset);
        // MAP_PRIVATE: the guest's writes stay in this process. MAP_NORESERVE, as for fresh RAM:
        // the pages it copies are counted when it writes them.
        let mapping = MmapRegion::build(
            Some(file_offset),
            region.size as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_NORESERVE,
        )
        .map_err(|error| SnapshotError::Map(error.to_string()))?;
        let guest = GuestRegionMmap::new(mapping, GuestAddress(region.guest_address))
            .ok_or_else(|| SnapshotError::Invalid("a RAM region wraps around".into()))?;
        mapped.push(guest);
        offset += region.size;
    }
    GuestMemoryMmap::from_regions(mapped).map_err(|error| SnapshotError::Map(error.to_string()))
}
