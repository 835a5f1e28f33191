//! Page tables: the kernel's own mapping and one address space per process.
//!
//! x86-64 paging has four levels (PML4 → PDPT → PD → PT), each a 4 KiB table of 512 entries;
//! the CPU walks them on a TLB miss, starting from CR3. Our layout (docs/os.md):
//!
//! * the first GiB is the kernel's, identity-mapped (virtual = physical), supervisor-only: boot.rs
//!   maps it with 2 MiB pages, and [`init`] maps its first 2 MiB with 4 KiB pages instead, to
//!   leave page 0 unmapped (a null pointer faults), and unmaps what lies beyond RAM;
//! * the second GiB (`USER_BASE..USER_END`) belongs to the process: its program, its data, its
//!   stack, with the user bit set;
//! * the fourth GiB holds one 2 MiB page at 0xd000_0000, mini-kvm's virtio-mmio device windows
//!   (virtio.rs), identity-mapped, supervisor-only and uncached: device registers, not RAM.
//!
//! Every address space shares the kernel's page directories (two PDPT entries), so the kernel
//! looks the same from every process (it talks to the disk during a process's system call), and
//! a process switch is one write to CR3.

use crate::abi::{USER_BASE, USER_END};
use crate::cpu;
use crate::frames::{self, PAGE_SIZE};

pub const PRESENT: u64 = 1 << 0;
pub const WRITABLE: u64 = 1 << 1;
/// Ring 3 may use this page (every level of the walk must say so).
pub const USER: u64 = 1 << 2;
/// A software bit (the CPU ignores bits 9-11): this page is part of the user ELF image, shared
/// by every process, so tearing down an address space must not free it.
pub const SHARED: u64 = 1 << 9;
const ADDRESS: u64 = 0x000f_ffff_ffff_f000;
/// Page-level write-through and cache disable: what device registers need (a read must reach
/// the device, not a cache line).
const WRITE_THROUGH: u64 = 1 << 3;
const CACHE_DISABLE: u64 = 1 << 4;
/// In a page directory entry: a 2 MiB page rather than a page table.
const HUGE: u64 = 1 << 7;

/// mini-kvm's eight virtio-mmio slots, 4 KiB each from here (virtio.rs): inside one 2 MiB page.
pub const VIRTIO_WINDOW: u64 = 0xd000_0000;
/// The PDPT entry (one per GiB) that covers the window.
const DEVICE_PDPT_INDEX: usize = (VIRTIO_WINDOW >> 30) as usize;

/// The page directory for the fourth GiB (the device window), shared by every address space.
static DEVICE_PD: crate::cell::KernelCell<u64> = crate::cell::KernelCell::new(0);

unsafe extern "C" {
    // The boot page tables (boot.rs): the kernel's.
    static boot_pml4: u8;
    static boot_pdpt: u8;
    static boot_pd: u8;
}

pub fn kernel_pml4() -> u64 {
    (&raw const boot_pml4) as u64
}

fn kernel_pd() -> u64 {
    (&raw const boot_pd) as u64
}

fn table(physical: u64) -> &'static mut [u64; 512] {
    // SAFETY: page tables live in identity-mapped frames that only this module touches.
    unsafe { &mut *(physical as *mut [u64; 512]) }
}

fn index(virtual_address: u64, level: u32) -> usize {
    ((virtual_address >> (12 + 9 * level)) & 511) as usize
}

/// Finishes the kernel's mapping: 4 KiB pages for the first 2 MiB with page 0 left out,
/// nothing beyond the end of RAM (an access there is a page fault, not a stray MMIO exit), and
/// the virtio window.
pub fn init(ram_end: u64) -> bool {
    let (Some(pt), Some(device_pd)) = (frames::alloc(), frames::alloc()) else {
        return false;
    };
    table(device_pd)[index(VIRTIO_WINDOW, 1)] =
        VIRTIO_WINDOW | PRESENT | WRITABLE | HUGE | WRITE_THROUGH | CACHE_DISABLE;
    *DEVICE_PD.get() = device_pd;
    table((&raw const boot_pdpt) as u64)[DEVICE_PDPT_INDEX] = device_pd | PRESENT | WRITABLE;
    let entries = table(pt);
    for (i, entry) in entries.iter_mut().enumerate().skip(1) {
        *entry = (i as u64 * PAGE_SIZE) | PRESENT | WRITABLE;
    }
    let pd = table(kernel_pd());
    pd[0] = pt | PRESENT | WRITABLE;
    for (i, entry) in pd.iter_mut().enumerate().skip(1) {
        if (i as u64) << 21 >= ram_end {
            *entry = 0;
        }
    }
    cpu::write_cr3(kernel_pml4()); // drop the old translations
    true
}

/// A new address space: the kernel's first GiB, the device window and nothing else yet.
/// Returns its PML4.
pub fn new_address_space() -> Option<u64> {
    let pml4 = frames::alloc()?;
    let Some(pdpt) = frames::alloc() else {
        frames::free(pml4);
        return None;
    };
    // The kernel's page directory, without the user bit: ring 3 cannot touch the first GiB.
    table(pdpt)[0] = kernel_pd() | PRESENT | WRITABLE;
    table(pdpt)[DEVICE_PDPT_INDEX] = *DEVICE_PD.get() | PRESENT | WRITABLE;
    table(pml4)[0] = pdpt | PRESENT | WRITABLE | USER;
    Some(pml4)
}

/// The next-level table under `entries[i]`, made (zeroed) if there is none yet.
fn next_table(entries: &mut [u64; 512], i: usize) -> Option<u64> {
    if entries[i] & PRESENT == 0 {
        entries[i] = frames::alloc()? | PRESENT | WRITABLE | USER;
    }
    Some(entries[i] & ADDRESS)
}

/// Maps the page at `virtual_address` (in the user half) to `frame`, for ring 3. `flags`:
/// WRITABLE, SHARED.
pub fn map_user(pml4: u64, virtual_address: u64, frame: u64, flags: u64) -> Option<()> {
    let pdpt = table(pml4)[0] & ADDRESS;
    let pd = next_table(table(pdpt), index(virtual_address, 2))?;
    let pt = next_table(table(pd), index(virtual_address, 1))?;
    table(pt)[index(virtual_address, 0)] = frame | flags | PRESENT | USER;
    Some(())
}

/// Frees everything a process's address space owns: its page tables and its private pages.
/// Must not be the current address space.
pub fn free_address_space(pml4: u64) {
    let pdpt = table(pml4)[0] & ADDRESS;
    let user_pd = table(pdpt)[index(USER_BASE, 2)];
    if user_pd & PRESENT != 0 {
        for &pd_entry in table(user_pd & ADDRESS).iter() {
            if pd_entry & PRESENT == 0 {
                continue;
            }
            for &pte in table(pd_entry & ADDRESS).iter() {
                if pte & PRESENT != 0 && pte & SHARED == 0 {
                    frames::free(pte & ADDRESS);
                }
            }
            frames::free(pd_entry & ADDRESS);
        }
        frames::free(user_pd & ADDRESS);
    }
    frames::free(pdpt);
    frames::free(pml4);
}

/// The page table entry for `virtual_address`, if the page is mapped.
fn lookup(pml4: u64, virtual_address: u64) -> Option<u64> {
    let mut entry = pml4 | PRESENT;
    for level in (0..4).rev() {
        if entry & PRESENT == 0 {
            return None;
        }
        entry = table(entry & ADDRESS)[index(virtual_address, level)];
    }
    (entry & PRESENT != 0).then_some(entry)
}

/// Is `[address, address + length)` user memory of this address space (and writable, if
/// `write`)? System calls check every pointer a process hands them with this.
pub fn user_range_ok(pml4: u64, address: u64, length: u64, write: bool) -> bool {
    let Some(end) = address.checked_add(length) else {
        return false;
    };
    if address < USER_BASE || end > USER_END {
        return false;
    }
    let mut page = address & !(PAGE_SIZE - 1);
    while page < end {
        match lookup(pml4, page) {
            Some(pte) if pte & USER != 0 && (!write || pte & WRITABLE != 0) => {}
            _ => return false,
        }
        page += PAGE_SIZE;
    }
    true
}
