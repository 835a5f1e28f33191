//! The page-frame allocator: 4 KiB pages of physical memory for page tables, process stacks
//! and process data.
//!
//! Frames come from the RAM regions of the memory map, above the kernel, by moving a pointer
//! forward ("bump"); a freed frame goes on a free list (each free frame holds the address of the
//! next one) and is reused first. Booting costs nothing per frame, which matters when every
//! guest instruction is emulated. All RAM we use is identity-mapped in the kernel, so a frame's
//! physical address is also a pointer to it.

use crate::cell::KernelCell;
use crate::multiboot::{BootInfo, MAX_REGIONS};

pub const PAGE_SIZE: u64 = 4096;
/// The kernel maps the first GiB (boot.rs): frames must lie below it.
const MAPPED_END: u64 = 1 << 30;

struct Frames {
    regions: [(u64, u64); MAX_REGIONS],
    region_count: usize,
    /// The region being bumped through, and the next frame in it.
    current: usize,
    next: u64,
    /// The first free frame (0: none).
    free_list: u64,
    /// Frames never handed out plus frames on the free list.
    available: u64,
}

static FRAMES: KernelCell<Frames> = KernelCell::new(Frames {
    regions: [(0, 0); MAX_REGIONS],
    region_count: 0,
    current: 0,
    next: 0,
    free_list: 0,
    available: 0,
});

unsafe extern "C" {
    static __bss_end: u8;
}

/// Takes the RAM regions above the kernel image (the kernel ends at `__bss_end`).
pub fn init(boot: &BootInfo) {
    let kernel_end = (&raw const __bss_end) as u64;
    let frames = FRAMES.get();
    for &(start, end) in &boot.regions[..boot.region_count] {
        let start = start.max(kernel_end).next_multiple_of(PAGE_SIZE);
        let end = end.min(MAPPED_END) & !(PAGE_SIZE - 1);
        if start < end {
            frames.regions[frames.region_count] = (start, end);
            frames.region_count += 1;
            frames.available += (end - start) / PAGE_SIZE;
        }
    }
    frames.next = frames.regions[0].0;
}

/// A zeroed frame, or `None` when memory is exhausted.
pub fn alloc() -> Option<u64> {
    let frames = FRAMES.get();
    let frame = if frames.free_list != 0 {
        let frame = frames.free_list;
        // SAFETY: a free frame holds the address of the next free frame.
        frames.free_list = unsafe { *(frame as *const u64) };
        frame
    } else {
        while frames.current < frames.region_count
            && frames.next >= frames.regions[frames.current].1
        {
            frames.current += 1;
            if frames.current < frames.region_count {
                frames.next = frames.regions[frames.current].0;
            }
        }
        if frames.current == frames.region_count {
            return None;
        }
        let frame = frames.next;
        frames.next += PAGE_SIZE;
        frame
    };
    frames.available -= 1;
    zero(frame);
    Some(frame)
}

pub fn free(frame: u64) {
    let frames = FRAMES.get();
    // SAFETY: the frame is ours again; its first 8 bytes now link the free list.
    unsafe { *(frame as *mut u64) = frames.free_list };
    frames.free_list = frame;
    frames.available += 1;
}

pub fn available() -> u64 {
    FRAMES.get().available
}

/// `rep stosq`: 512 stores of 8 bytes. (KVM's emulator repeats a string instruction one
/// element at a time, so 8-byte elements make zeroing a frame 8 times faster than `rep stosb`.)
fn zero(frame: u64) {
    // SAFETY: an identity-mapped frame nobody else uses.
    unsafe {
        core::arch::asm!("rep stosq", inout("rdi") frame => _, inout("rcx") PAGE_SIZE / 8 => _,
                         in("rax") 0u64, options(nostack, preserves_flags));
    }
}
