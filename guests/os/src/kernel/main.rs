//! The teaching OS's kernel: booted by mini-kvm as a multiboot kernel, it sets up long mode,
//! paging, interrupts and processes, then runs the shell (src/user) in ring 3.
//! docs/os.md walks through it; start reading at `kernel_main` below.

#![no_std]
#![no_main]

#[path = "../abi.rs"]
mod abi;
mod boot;
mod cell;
mod console;
mod cpu;
mod elf;
mod frames;
mod gdt;
mod keyboard;
#[path = "../mem.rs"]
mod mem;
mod mptable;
mod multiboot;
#[path = "../num.rs"]
mod num;
#[path = "../out.rs"]
mod out;
mod paging;
mod pic;
mod process;
mod syscall;
mod trap;
mod tty;

use abi::program;
use console::Out;

/// What a multiboot loader puts in EAX.
const MULTIBOOT_BOOTLOADER_MAGIC: u64 = 0x2bad_b002;

/// Called by boot.rs in long mode, with interrupts off, on the boot stack.
#[unsafe(no_mangle)]
extern "C" fn kernel_main(magic: u64, info: u64) -> ! {
    if magic != MULTIBOOT_BOOTLOADER_MAGIC {
        stop(b"os: not started by a multiboot loader\n");
    }
    let boot = multiboot::read(info);
    // Before paging::init unmaps page 0, where the BIOS data area points to the MP table.
    let cpus = mptable::cpu_count(boot.ram_end);
    frames::init(&boot);
    if !paging::init(boot.ram_end) {
        stop(b"os: no memory for page tables\n");
    }
    gdt::init();
    trap::init();
    pic::init();
    keyboard::init();
    process::init();
    let shell = process::spawn(program::SHELL, 0);
    let bgcount = process::spawn(program::BGCOUNT, 0);
    let (Ok(shell), Ok(bgcount)) = (shell, bgcount) else {
        stop(b"os: not enough memory to start the shell\n");
    };
    if boot.verbose {
        let mut out = Out::new();
        out.s(b"os: ")
            .u(boot.ram_end >> 20)
            .s(b" MiB of RAM, ")
            .u(frames::available())
            .s(b" free page frames\n");
        match cpus {
            Some(1) => out.s(b"os: 1 CPU in the MP table\n"),
            Some(n) => out
                .s(b"os: ")
                .u(n)
                .s(b" CPUs in the MP table; the kernel runs on CPU 0 only\n"),
            None => out.s(b"os: no MP table: 1 CPU\n"),
        };
        out.s(b"os: long mode, 4-level paging, page 0 unmapped; GDT, TSS, IDT\n")
            .s(b"os: PIC at vectors 32-47, PIT at 100 Hz, i8042 keyboard on IRQ 1\n")
            .s(b"os: started shell (pid ")
            .u(u64::from(shell))
            .s(b") and bgcount (pid ")
            .u(u64::from(bgcount))
            .s(b")\n");
    }
    if boot.kernel_fault {
        trap::provoke_kernel_fault();
    }
    process::start()
}

fn stop(message: &[u8]) -> ! {
    console::write(message);
    console::exit(trap::KERNEL_FAULT_STATUS)
}

/// A Rust panic in the kernel (a bug): say so and stop. No `core::fmt`: just the location.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let mut out = Out::new();
    out.s(b"\nos: KERNEL PANIC");
    if let Some(location) = info.location() {
        out.s(b" at ")
            .s(location.file().as_bytes())
            .s(b":")
            .u(u64::from(location.line()));
    }
    out.s(b"\n").flush();
    console::exit(trap::KERNEL_FAULT_STATUS)
}
