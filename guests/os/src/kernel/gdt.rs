//! The GDT and the TSS.
//!
//! In long mode segments are almost gone, but the CPU still needs descriptors: a code segment
//! whose privilege level (0 or 3) is the ring the CPU runs in, and the TSS, whose RSP0 is the
//! stack the CPU switches to when an interrupt or exception arrives from ring 3. The scheduler
//! sets RSP0 to the kernel stack of the process it switches to.

use core::arch::asm;
use core::mem::size_of;

use crate::cell::KernelCell;

pub const KERNEL_CODE: u16 = 0x08;
pub const KERNEL_DATA: u16 = 0x10;
/// Ring-3 selectors carry the requested privilege level 3 in their low bits.
pub const USER_CODE: u16 = 0x18 | 3;
pub const USER_DATA: u16 = 0x20 | 3;
const TSS_SELECTOR: u16 = 0x28;

/// The 64-bit task state segment: only RSP0 matters here.
#[repr(C, packed)]
struct Tss {
    reserved0: u32,
    rsp: [u64; 3],
    reserved1: u64,
    ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    /// Beyond the limit: no I/O permission bitmap, so ring 3 may use no port at all.
    io_map_base: u16,
}

static TSS: KernelCell<Tss> = KernelCell::new(Tss {
    reserved0: 0,
    rsp: [0; 3],
    reserved1: 0,
    ist: [0; 7],
    reserved2: 0,
    reserved3: 0,
    io_map_base: size_of::<Tss>() as u16,
});

/// Null, kernel code and data (the same as boot.rs's), user code and data (DPL 3), and the TSS
/// (a 16-byte descriptor, filled in by `init`).
static GDT: KernelCell<[u64; 7]> = KernelCell::new([
    0,
    0x00af_9a00_0000_ffff, // 0x08 kernel code: present, DPL 0, code, 64-bit (L)
    0x00cf_9200_0000_ffff, // 0x10 kernel data: present, DPL 0, data, writable
    0x00af_fa00_0000_ffff, // 0x18 user code: as kernel code, DPL 3
    0x00cf_f200_0000_ffff, // 0x20 user data: as kernel data, DPL 3
    0,                     // 0x28 TSS, low half
    0,                     // 0x28 TSS, high half
]);

#[repr(C, packed)]
struct Pointer {
    limit: u16,
    base: u64,
}

pub fn init() {
    let tss = TSS.get() as *const Tss as u64;
    let limit = size_of::<Tss>() as u64 - 1;
    let gdt = GDT.get();
    // A TSS descriptor: base and limit scattered over the fields, type 0x9 (available 64-bit
    // TSS), present.
    gdt[5] = (limit & 0xffff)
        | ((tss & 0xff_ffff) << 16)
        | (0x89 << 40)
        | (((limit >> 16) & 0xf) << 48)
        | (((tss >> 24) & 0xff) << 56);
    gdt[6] = tss >> 32;
    let pointer = Pointer {
        limit: (size_of::<[u64; 7]>() - 1) as u16,
        base: gdt.as_ptr() as u64,
    };
    // CS, DS and SS keep their selectors (0x08, 0x10), which mean the same in this GDT: no
    // reload needed.
    unsafe {
        asm!("lgdt [{}]", in(reg) &pointer, options(nostack));
        asm!("ltr {0:x}", in(reg) TSS_SELECTOR, options(nostack));
    }
}

/// The stack the CPU takes for an interrupt or exception from ring 3.
pub fn set_kernel_stack(top: u64) {
    let tss = TSS.get();
    // A packed field cannot be borrowed: copy, change, store.
    let mut rsp = tss.rsp;
    rsp[0] = top;
    tss.rsp = rsp;
}
