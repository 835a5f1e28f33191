//! Guest RAM: the host mapping behind it, and the questions the VMM asks about it.
//!
//! Guest RAM is anonymous memory in the VMM process (vm-memory's `GuestMemoryMmap`, mapped with
//! `MAP_NORESERVE`: the host only gives it pages the guest touches), in one or two regions laid
//! out by [`layout::ram_regions`]: below the MMIO hole, and from 4 GiB for what does not fit
//! there. Each region becomes one KVM memory slot, except that with a display, the VGA text
//! buffer's pages get a slot of their own whose writes KVM logs (the display's dirty log).

use std::sync::Arc;

use kvm_bindings::{KVM_MEM_LOG_DIRTY_PAGES, kvm_userspace_memory_region};
use kvm_ioctls::VmFd;
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::arch::x86::layout;
use crate::devices::display::DirtyLog;

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
    let mut slots = MemorySlots::default();
    for region in memory.iter() {
        slots.add(vm_fd, memory, region.start_addr().0, region.len(), false)?;
    }
    Ok(())
}

/// Gives `memory` to KVM like [`register_memory_slots`], but with `logged` (a page-aligned
/// range inside the first region) cut out into a slot of its own whose writes KVM logs
/// (`KVM_MEM_LOG_DIRTY_PAGES`): the VGA text buffer, which the display redraws when it changes.
/// Only that slot is logged: logging all of RAM would make the guest's first write to every
/// page a fault.
pub fn register_memory_slots_logging(
    vm_fd: &Arc<VmFd>,
    memory: &GuestMemoryMmap,
    logged: (u64, u64),
    slots: &mut MemorySlots,
) -> Result<LoggedSlot, kvm_ioctls::Error> {
    let (logged_start, logged_len) = logged;
    let logged_end = logged_start + logged_len;
    let mut logged_slot = None;
    for region in memory.iter() {
        let (start, end) = (region.start_addr().0, region.start_addr().0 + region.len());
        if start <= logged_start && logged_end <= end {
            slots.add(vm_fd, memory, start, logged_start - start, false)?;
            let slot = slots.add(vm_fd, memory, logged_start, logged_len, true)?;
            logged_slot = Some(LoggedSlot::new(vm_fd, slot, logged_len));
            slots.add(vm_fd, memory, logged_end, end - logged_end, false)?;
        } else {
            slots.add(vm_fd, memory, start, region.len(), false)?;
        }
    }
    // The caller checks that RAM covers the range; not covering it is a bug.
    logged_slot.ok_or_else(|| kvm_ioctls::Error::new(libc::EINVAL))
}

/// Gives all of `memory` (one region: memory that is not RAM, like a framebuffer) to KVM as one
/// logged slot.
pub fn register_logged_region(
    vm_fd: &Arc<VmFd>,
    memory: &GuestMemoryMmap,
    slots: &mut MemorySlots,
) -> Result<LoggedSlot, kvm_ioctls::Error> {
    let region = memory
        .iter()
        .next()
        .ok_or_else(|| kvm_ioctls::Error::new(libc::EINVAL))?;
    let slot = slots.add(vm_fd, memory, region.start_addr().0, region.len(), true)?;
    Ok(LoggedSlot::new(vm_fd, slot, region.len()))
}

/// Hands out KVM memory slot numbers, in order.
#[derive(Default)]
pub struct MemorySlots {
    next: u32,
}

impl MemorySlots {
    /// Makes `[start, start + len)` of `memory` (inside one of its regions) a KVM slot; an empty
    /// range makes none. Returns the slot's number.
    fn add(
        &mut self,
        vm_fd: &VmFd,
        memory: &GuestMemoryMmap,
        start: u64,
        len: u64,
        log_dirty_pages: bool,
    ) -> Result<u32, kvm_ioctls::Error> {
        if len == 0 {
            return Ok(self.next);
        }
        let host_address = memory
            .get_host_address(GuestAddress(start))
            .map_err(|_| kvm_ioctls::Error::new(libc::EFAULT))?;
        let flags = if log_dirty_pages {
            KVM_MEM_LOG_DIRTY_PAGES
        } else {
            0
        };
        let slot = self.next;
        let region = kvm_userspace_memory_region {
            slot,
            flags,
            guest_phys_addr: start,
            memory_size: len,
            userspace_addr: host_address as u64,
        };
        // SAFETY: `memory` maps `len` bytes at `host_address` (the range is inside one of its
        // regions) and lives as long as the VM (the vCPUs and devices hold clones of it), so KVM
        // never sees unmapped memory.
        unsafe { vm_fd.set_user_memory_region(region) }?;
        self.next += 1;
        Ok(slot)
    }
}

/// A memory slot whose writes KVM logs: which of its pages the guest wrote since the last look.
pub struct LoggedSlot {
    vm_fd: Arc<VmFd>,
    slot: u32,
    size: usize,
}

impl LoggedSlot {
    fn new(vm_fd: &Arc<VmFd>, slot: u32, size: u64) -> LoggedSlot {
        LoggedSlot {
            vm_fd: Arc::clone(vm_fd),
            slot,
            size: size as usize,
        }
    }
}

impl DirtyLog for LoggedSlot {
    /// `KVM_GET_DIRTY_LOG`: one bit per page, and KVM clears the log as it hands it over.
    fn dirty_pages(&self) -> Option<Vec<u64>> {
        self.vm_fd.get_dirty_log(self.slot, self.size).ok()
    }
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
