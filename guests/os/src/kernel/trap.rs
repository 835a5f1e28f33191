//! Interrupts and exceptions: the IDT, the entry stubs, and where each vector goes.
//!
//! Every vector enters the kernel the same way. The CPU pushes SS, RSP, RFLAGS, CS and RIP (on
//! the TSS's RSP0 stack when it comes from ring 3) and, for some exceptions, an error code; the
//! stub pushes a 0 where the CPU did not, then the vector number; `trap_common` pushes the
//! general registers. That makes a [`TrapFrame`] on the stack: the whole state of the
//! interrupted code. [`trap_dispatch`] handles it and returns the frame to resume, which is a
//! *different* process's frame when the scheduler switches: the stub restores its registers and
//! `iretq` goes there. That is the only way the kernel switches processes.
//!
//! `iretq` is also the only way into ring 3 and back: KVM's instruction emulator, which runs
//! our guests on hosts without hardware virtualization, handles 64-bit `iretq` but neither
//! `int $n` nor `syscall` there (docs/os.md). System calls arrive as exception 6 (#UD).

use core::arch::global_asm;
use core::mem::size_of;

use crate::cell::KernelCell;
use crate::console::{self, Out};
use crate::cpu;
use crate::gdt::KERNEL_CODE;
use crate::pic::{self, IRQ_BASE, KEYBOARD_IRQ, TIMER_IRQ};
use crate::{keyboard, process, syscall, virtio};

/// The interrupted state, as the stubs leave it on the stack (lowest address first).
#[repr(C)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    // Pushed by the CPU:
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

impl TrapFrame {
    /// Did the trap come from ring 3?
    pub fn in_user_mode(&self) -> bool {
        self.cs & 3 == 3
    }
}

/// Vectors 0-31 are CPU exceptions, 32-47 the PIC's IRQ 0-15.
const VECTORS: usize = 48;

global_asm!(
    r#"
    # A stub per vector. The CPU pushes an error code for vectors 8, 10-14, 17, 21, 29 and 30.
    .macro trap_stub vector, has_error_code
trap_stub_\vector:
    .if \has_error_code == 0
    push $0
    .endif
    push $\vector
    jmp trap_common
    .endm

    .text
    .irp v, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31
    trap_stub \v, 0
    .endr
    .irp v, 8,10,11,12,13,14,17,21,29,30
    trap_stub \v, 1
    .endr
    .irp v, 32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47
    trap_stub \v, 0
    .endr

trap_common:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rdi
    cld
    call trap_dispatch              # returns the frame to resume
    mov %rax, %rdi

    # resume_frame(frame): restore the state in `frame` and go there.
    .global resume_frame
resume_frame:
    mov %rdi, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add $16, %rsp                   # the vector and the error code
    iretq

    .section .rodata
    .balign 8
    .global trap_stubs
trap_stubs:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47
    .quad trap_stub_\v
    .endr
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static trap_stubs: [u64; VECTORS];
    /// Restores `frame` and returns to it with `iretq`.
    pub fn resume_frame(frame: *mut TrapFrame) -> !;
}

/// An IDT entry: a 64-bit interrupt gate (the CPU clears IF on entry: the kernel always runs
/// with interrupts off).
#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attributes: u8,
    offset_middle: u16,
    offset_high: u32,
    reserved: u32,
}

const PRESENT_INTERRUPT_GATE: u8 = 0x8e;

static IDT: KernelCell<[Gate; VECTORS]> = KernelCell::new(
    [Gate {
        offset_low: 0,
        selector: 0,
        ist: 0,
        type_attributes: 0,
        offset_middle: 0,
        offset_high: 0,
        reserved: 0,
    }; VECTORS],
);

#[repr(C, packed)]
struct Pointer {
    limit: u16,
    base: u64,
}

pub fn init() {
    let idt = IDT.get();
    for (vector, gate) in idt.iter_mut().enumerate() {
        // SAFETY: a table of VECTORS addresses, defined above.
        let handler = unsafe { trap_stubs[vector] };
        *gate = Gate {
            offset_low: handler as u16,
            selector: KERNEL_CODE,
            ist: 0,
            type_attributes: PRESENT_INTERRUPT_GATE,
            offset_middle: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        };
    }
    let pointer = Pointer {
        limit: (size_of::<[Gate; VECTORS]>() - 1) as u16,
        base: idt.as_ptr() as u64,
    };
    unsafe { core::arch::asm!("lidt [{}]", in(reg) &pointer, options(nostack)) };
}

const INVALID_OPCODE: u64 = 6;
pub const PAGE_FAULT: u64 = 14;

/// Every interrupt and exception lands here (from `trap_common`), with interrupts off.
/// Returns the frame to resume.
#[unsafe(no_mangle)]
extern "C" fn trap_dispatch(frame: *mut TrapFrame) -> *mut TrapFrame {
    // SAFETY: the stub passes the frame it just built on this stack.
    let trap = unsafe { &mut *frame };
    match trap.vector {
        INVALID_OPCODE if trap.in_user_mode() && syscall::is_system_call(trap) => {
            syscall::handle(frame)
        }
        0..=31 if trap.in_user_mode() => process::kill_current(frame),
        0..=31 => kernel_fault(trap),
        vector if vector == IRQ_BASE + TIMER_IRQ => {
            pic::end_of_interrupt(TIMER_IRQ);
            process::timer_tick(frame)
        }
        vector if vector == IRQ_BASE + KEYBOARD_IRQ => {
            keyboard::interrupt();
            pic::end_of_interrupt(KEYBOARD_IRQ);
            process::wake_readers();
            process::run_woken(frame)
        }
        // A virtio device finished a request. The kernel, waiting for it in `sti; hlt`
        // (virtio.rs), goes on when this returns.
        vector if is_virtio(vector) => {
            virtio::interrupt(vector - IRQ_BASE);
            pic::end_of_interrupt(vector - IRQ_BASE);
            frame
        }
        vector => {
            pic::end_of_interrupt(vector - IRQ_BASE);
            frame
        }
    }
}

/// Is `vector` one of the virtio slots' IRQs (5-12)?
fn is_virtio(vector: u64) -> bool {
    let first = IRQ_BASE + virtio::FIRST_IRQ;
    (first..first + virtio::SLOTS as u64).contains(&vector)
}

/// The name of a CPU exception.
pub fn exception_name(vector: u64) -> &'static [u8] {
    const NAMES: [&[u8]; 22] = [
        b"divide error (#DE)",
        b"debug (#DB)",
        b"non-maskable interrupt (NMI)",
        b"breakpoint (#BP)",
        b"overflow (#OF)",
        b"bound range exceeded (#BR)",
        b"invalid opcode (#UD)",
        b"device not available (#NM)",
        b"double fault (#DF)",
        b"coprocessor segment overrun",
        b"invalid TSS (#TS)",
        b"segment not present (#NP)",
        b"stack-segment fault (#SS)",
        b"general protection fault (#GP)",
        b"page fault (#PF)",
        b"reserved exception",
        b"x87 floating-point error (#MF)",
        b"alignment check (#AC)",
        b"machine check (#MC)",
        b"SIMD floating-point error (#XM)",
        b"virtualization exception (#VE)",
        b"control protection (#CP)",
    ];
    NAMES
        .get(vector as usize)
        .copied()
        .unwrap_or(b"reserved exception")
}

/// An exception in the kernel is a bug: report everything and stop the machine.
fn kernel_fault(trap: &TrapFrame) -> ! {
    let mut out = Out::new();
    out.s(b"\nos: KERNEL FAULT: ")
        .s(exception_name(trap.vector))
        .s(b", vector ")
        .u(trap.vector)
        .s(b", in the kernel\n  error code ")
        .hex(trap.error_code)
        .s(b"  rip ")
        .hex(trap.rip)
        .s(b"  cs ")
        .hex(trap.cs)
        .s(b"  rflags ")
        .hex(trap.rflags)
        .s(b"\n");
    if trap.vector == PAGE_FAULT {
        out.s(b"  cr2 ")
            .hex(cpu::read_cr2())
            .s(b" (the address that faulted)\n");
    }
    let registers: [(&[u8], u64); 16] = [
        (b"rax", trap.rax),
        (b"rbx", trap.rbx),
        (b"rcx", trap.rcx),
        (b"rdx", trap.rdx),
        (b"rsi", trap.rsi),
        (b"rdi", trap.rdi),
        (b"rbp", trap.rbp),
        (b"rsp", trap.rsp),
        (b"r8 ", trap.r8),
        (b"r9 ", trap.r9),
        (b"r10", trap.r10),
        (b"r11", trap.r11),
        (b"r12", trap.r12),
        (b"r13", trap.r13),
        (b"r14", trap.r14),
        (b"r15", trap.r15),
    ];
    for (i, (name, value)) in registers.iter().enumerate() {
        out.s(b"  ").s(name).s(b" ").hex(*value);
        if i % 4 == 3 {
            out.s(b"\n");
        }
    }
    out.s(b"os: the kernel cannot go on: stopping with status ")
        .u(u64::from(KERNEL_FAULT_STATUS))
        .s(b"\n");
    out.flush();
    console::exit(KERNEL_FAULT_STATUS)
}

/// The EXIT status after a kernel fault.
pub const KERNEL_FAULT_STATUS: u8 = 3;

/// `--cmdline kernel-fault`: the kernel reads address 0, to show the report above.
pub fn provoke_kernel_fault() -> ! {
    let value: u64;
    // Through `asm!`, so the compiler cannot treat the null read as undefined behaviour.
    unsafe { core::arch::asm!("mov {}, qword ptr [{}]", out(reg) value, in(reg) 0u64) };
    let _ = value;
    unreachable_after_fault()
}

fn unreachable_after_fault() -> ! {
    console::exit(KERNEL_FAULT_STATUS)
}
