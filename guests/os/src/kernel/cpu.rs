//! The few privileged instructions the kernel needs, one small function each.

use core::arch::asm;

pub fn inb(port: u16) -> u8 {
    let value: u8;
    unsafe { asm!("in al, dx", out("al") value, in("dx") port, options(nostack, nomem)) };
    value
}

pub fn outb(port: u16, value: u8) {
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nostack, nomem)) };
}

/// Switches address space: CR3 holds the physical address of the top-level page table (PML4).
pub fn write_cr3(pml4: u64) {
    unsafe { asm!("mov cr3, {}", in(reg) pml4, options(nostack)) };
}

/// The address a page fault was about.
pub fn read_cr2() -> u64 {
    let value: u64;
    unsafe { asm!("mov {}, cr2", out(reg) value, options(nostack, nomem)) };
    value
}
