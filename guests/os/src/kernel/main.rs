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
mod disk;
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
mod random;
mod syscall;
mod tar;
mod trap;
mod tty;
mod vga;
mod virtio;

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
    if let Some(address) = boot.text_screen {
        vga::init(address);
    }
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
    let devices = start_virtio_devices();
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
        report_virtio_devices(&devices, &mut out);
    }
    if boot.kernel_fault {
        trap::provoke_kernel_fault();
    }
    process::start()
}

/// Looks at mini-kvm's 8 virtio-mmio slots and starts a driver for the first block device and
/// the first entropy device (virtio.rs). Returns each slot's DeviceID, for `verbose`. A device
/// that fails to start is reported at once, and the OS goes on without it.
fn start_virtio_devices() -> [u32; virtio::SLOTS] {
    let ids = virtio::scan();
    for (slot, &id) in ids.iter().enumerate() {
        let started = match id {
            virtio::ID_BLOCK if disk::info().is_none() => disk::start(slot),
            virtio::ID_ENTROPY if random::slot().is_none() => random::start(slot),
            _ => continue,
        };
        if let Err(why) = started {
            Out::new()
                .s(b"os: the virtio device in slot ")
                .u(slot as u64)
                .s(b" did not start: ")
                .s(why)
                .s(b"\n");
        }
    }
    ids
}

/// `verbose`: a line per virtio device found: slot, address, IRQ, and what it is.
fn report_virtio_devices(ids: &[u32; virtio::SLOTS], out: &mut Out) {
    if ids.iter().all(|&id| id == 0) {
        out.s(b"os: no virtio devices in the 8 virtio-mmio slots (mini-kvm --disk FILE, --rng)\n");
    }
    for (slot, &id) in ids.iter().enumerate().filter(|(_, id)| **id != 0) {
        out.s(b"os: virtio slot ")
            .u(slot as u64)
            .s(b" at ")
            .hex(virtio::slot_address(slot))
            .s(b", IRQ ")
            .u(virtio::slot_irq(slot))
            .s(b": ");
        match (id, disk::info(), random::slot()) {
            (virtio::ID_BLOCK, Some((used, sectors, read_only)), _) if used == slot => {
                out.s(b"disk, ")
                    .u(sectors)
                    .s(b" sectors (")
                    .u(sectors / 2)
                    .s(if read_only {
                        b" KiB), read-only\n"
                    } else {
                        b" KiB), read-write\n"
                    });
            }
            (virtio::ID_ENTROPY, _, Some(used)) if used == slot => {
                out.s(b"entropy device\n");
            }
            (virtio::ID_BLOCK, _, _) => {
                out.s(b"disk, not used (the OS uses the first one that starts)\n");
            }
            (virtio::ID_ENTROPY, _, _) => {
                out.s(b"entropy device, not used (the OS uses the first one that starts)\n");
            }
            (1, _, _) => {
                out.s(b"network card (virtio-net), no driver in this OS\n");
            }
            _ => {
                out.s(b"device type ").u(u64::from(id)).s(b", no driver\n");
            }
        }
    }
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
