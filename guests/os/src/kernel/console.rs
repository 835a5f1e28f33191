//! Output through mini-kvm's hypercalls (docs/hypercall-abi.md): the call number in AL, the
//! arguments in RBX and RCX, one `out` to port 0x500, one VM exit. WRITE hands over a whole
//! buffer per exit, so the kernel collects text in an [`Out`] and writes it at once. With a
//! display, the same text goes to the VGA screen too (vga.rs).

use core::arch::asm;

const HYPERCALL_PORT: u16 = 0x500;
const HC_EXIT: u8 = 0x00;
const HC_WRITE: u8 = 0x05;

/// One hypercall with two arguments; returns RAX.
fn hypercall(number: u8, arg0: u64, arg1: u64) -> u64 {
    let result: u64;
    // RBX cannot be named as an operand (LLVM keeps it for itself): swap it in and out.
    unsafe {
        asm!("xchg {arg0}, rbx", "out dx, al", "xchg {arg0}, rbx",
             arg0 = inout(reg) arg0 => _, in("rcx") arg1, in("dx") HYPERCALL_PORT,
             inout("rax") u64::from(number) => result, options(nostack));
    }
    result
}

/// Writes `length` bytes at `address`, a virtual address of the current address space: mini-kvm
/// translates it through our page tables.
pub fn write_raw(address: u64, length: u64) {
    hypercall(HC_WRITE, address, length);
    // And on the screen, when there is one. The caller has checked the range (a process's
    // buffer is mapped in the current address space).
    // SAFETY: `length` readable bytes at `address`, as for the hypercall.
    crate::vga::write(unsafe {
        core::slice::from_raw_parts(address as *const u8, length as usize)
    });
}

pub fn write(bytes: &[u8]) {
    write_raw(bytes.as_ptr() as u64, bytes.len() as u64);
}

/// Stops the machine: mini-kvm exits with `status`.
pub fn exit(status: u8) -> ! {
    hypercall(HC_EXIT, u64::from(status), 0);
    unreachable_halt()
}

fn unreachable_halt() -> ! {
    loop {
        unsafe { asm!("cli", "hlt") };
    }
}

/// A line of text being put together, written with one hypercall when flushed, full or
/// dropped (src/out.rs).
pub type Out = crate::out::Out<256>;

impl Out {
    pub fn new() -> Out {
        Out::to(write)
    }
}
