//! Guest RAM: the host mapping behind it, and the questions the VMM asks about it.
//!
//! Guest RAM is anonymous memory in the VMM process (vm-memory's `GuestMemoryMmap`, mapped with
//! `MAP_NORESERVE`: the host only gives it pages the guest touches), in one or two regions laid
//! out by [`layout::ram_regions`]: below the MMIO hole, and from 4 GiB for what does not fit
//! there. Each region becomes one KVM memory slot.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use thiserror::Error;
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    MemoryRegionAddress,
};

use crate::arch::x86::layout;

#[derive(Debug, Error)]
pub enum MemoryError {
    #[error("cannot map {size} bytes of guest memory: {source}")]
    Map {
        size: u64,
        source: vm_memory::mmap::FromRangesError,
    },
}

/// Maps `size` bytes of zeroed guest RAM, split around the MMIO hole.
pub fn create_guest_memory(size: u64) -> Result<GuestMemoryMmap, MemoryError> {
    let ranges: Vec<(GuestAddress, usize)> = layout::ram_regions(size)
        .into_iter()
        .map(|(start, len)| (GuestAddress(start), len as usize))
        .collect();
    GuestMemoryMmap::from_ranges(&ranges).map_err(|source| MemoryError::Map { size, source })
}

/// Gives every region of `memory` to KVM as a memory slot (0, 1), at its guest-physical address.
pub fn register_memory_slots(
    vm_fd: &VmFd,
    memory: &GuestMemoryMmap,
) -> Result<(), kvm_ioctls::Error> {
    for (slot, region) in memory.iter().enumerate() {
        let host_address = region
            .get_host_address(MemoryRegionAddress(0))
            .map_err(|_| kvm_ioctls::Error::new(libc::EFAULT))?;
        let slot = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host_address as u64,
        };
        // SAFETY: the region maps `memory_size` bytes at `host_address` and lives as long as
        // the VM (the vCPUs and devices hold clones of `memory`), so KVM never sees unmapped
        // memory.
        unsafe { vm_fd.set_user_memory_region(slot) }?;
    }
    Ok(())
}

/// Is `[address, address + len)` entirely guest RAM? (`len` may be 0.)
pub fn range_is_ram(memory: &GuestMemoryMmap, address: u64, len: u64) -> bool {
    if len == 0 {
        return address_is_ram_or_end(memory, address);
    }
    address.checked_add(len).is_some() && memory.check_range(GuestAddress(address), len as usize)
}

/// An empty range is "in RAM" anywhere inside a region or at its very end.
fn address_is_ram_or_end(memory: &GuestMemoryMmap, address: u64) -> bool {
    memory.address_in_range(GuestAddress(address))
        || address
            .checked_sub(1)
            .is_some_and(|last| memory.address_in_range(GuestAddress(last)))
}

/// Reads up to `buf.len()` bytes at a guest-physical address; returns how many could be read
/// (fewer at the end of RAM, 0 outside it). Used for reports and traces, where a short read is fine.
pub fn read_prefix(memory: &GuestMemoryMmap, address: u64, buf: &mut [u8]) -> usize {
    let Some(region) = memory.find_region(GuestAddress(address)) else {
        return 0;
    };
    let left_in_region = region.last_addr().0 - address + 1;
    let len = buf.len().min(left_in_region as usize);
    match memory.read_slice(&mut buf[..len], GuestAddress(address)) {
        Ok(()) => len,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_is_split_around_the_hole() {
        // MAP_NORESERVE: these gigabytes are never touched.
        let memory = create_guest_memory(4 << 30).unwrap();
        assert_eq!(memory.num_regions(), 2);
        assert_eq!(crate::loader::ram_size(&memory), 4 << 30);
        assert!(range_is_ram(&memory, 0xbfff_f000, 0x1000));
        assert!(!range_is_ram(&memory, 0xbfff_f000, 0x1001));
        assert!(!range_is_ram(&memory, layout::IOAPIC_ADDRESS, 1));
        assert!(range_is_ram(&memory, 1 << 32, 1 << 30));
        assert!(!range_is_ram(&memory, 1 << 32, (1 << 30) + 1));
        assert!(range_is_ram(&memory, 0xc000_0000, 0));
        assert!(!range_is_ram(&memory, u64::MAX, 2));
    }

    #[test]
    fn short_reads_at_the_end_of_ram() {
        let memory = create_guest_memory(1 << 20).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(read_prefix(&memory, (1 << 20) - 3, &mut buf), 3);
        assert_eq!(read_prefix(&memory, 1 << 20, &mut buf), 0);
        assert_eq!(read_prefix(&memory, 0, &mut buf), 8);
    }
}
