//! Solution to exercise ex04 of the book "Write a hypervisor with mini-kvm"
//! (book/src/exercises.md): Step 3 with a device in the hole, a counter at 0x20000.
//! `cargo run --example ex04_mmio_counter`; `diff examples/step03_guest_memory.rs
//! book/solutions/ex04_mmio_counter.rs` shows the whole answer.
//!
//! The device is a few lines of the run loop: each write to 0x20000 adds one to a count, and a
//! read of 0x20000 answers the count. The guest is Step 3's: it writes an `X` and reads the byte
//! back, and now finds 1 instead of the empty bus's 0xff. It cannot tell the device from RAM by
//! the instructions it uses, which are the same; only by what it reads back (and by the time an
//! MMIO exit takes).

use std::io::Write;
use std::process::ExitCode;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// The guest-physical map: two pieces of RAM, each a KVM memory slot, and a hole between them
/// where nothing is mapped. Slot 0 holds the program (at 0x10000) and its stack.
const SLOT_0: (u64, usize) = (0x0, 0x20000); //      128 KiB
const HOLE: (u64, usize) = (0x20000, 0x10000); //    64 KiB of nothing
const SLOT_1: (u64, usize) = (0x30000, 0x1000); //   4 KiB
/// The guest runs at segment 0x1000, offset 0: guest-physical 0x10000.
const LOAD_SEGMENT: u16 = 0x1000;

/// COM1, a 16550 UART: its transmit register (a byte written is a byte of output)...
const UART_DATA: u16 = 0x3f8;
/// ...and its line status register. Bit 5, "transmit holding register empty", tells a driver
/// that it may write the next byte. Our UART is never busy: the bit is always set.
const UART_LINE_STATUS: u16 = 0x3fd;
const LSR_THR_EMPTY: u8 = 1 << 5;

/// mini-kvm's hypercall port: `out %al` here with the call number in AL, arguments in BX, CX,
/// SI; the VMM puts the result in AX (book/src/ch02-port-io.md has the table).
const HYPERCALL_PORT: u16 = 0x500;
const HC_EXIT: u8 = 0x00; //    BX = status (0-255): stop the guest
const HC_PUTCHAR: u8 = 0x01; // BL = a character
const HC_PUTNUM: u8 = 0x02; //  BX = a number, printed in decimal
const HC_NEWLINE: u8 = 0x03;
const HC_WRITE: u8 = 0x05; //   BX = pointer, CX = length: print guest memory
/// Errors are negative results: -1 for a call number we do not know, -2 for a pointer outside
/// guest RAM, -3 for a bad argument.
const E_UNKNOWN_CALL: i64 = -1;
const E_FAULT: i64 = -2;
const E_INVALID_ARGUMENT: i64 = -3;

/// The device in the hole: a byte register that counts the writes to it.
const COUNTER_ADDRESS: u64 = 0x20000;

/// The guest: 16-bit real-mode code, assembled by hand (`as --32` with `.code16` gives the same).
const GUEST: &[u8] = &[
    0xb8, 0x00, 0x30, //       mov $0x3000, %ax
    0x8e, 0xc0, //             mov %ax, %es        ES:0 is guest-physical 0x30000, in slot 1
    0xbe, 0x37, 0x00, //       mov $message, %si   DS:SI is the text below
    0x31, 0xff, //             xor %di, %di
    0xb9, 0x13, 0x00, //       mov $19, %cx
    0xf3, 0xa4, //             rep movsb           copy it to ES:DI, no VM exit
    0x8e, 0xd8, //             mov %ax, %ds
    0x31, 0xdb, //             xor %bx, %bx        BX = DS:0, the copy
    0xb9, 0x13, 0x00, //       mov $19, %cx
    0xba, 0x00, 0x05, //       mov $0x500, %dx
    0xb0, 0x05, //             mov $5, %al
    0xee, //                   out %al, (%dx)      WRITE(0x3000:0, 19)
    0xb8, 0x00, 0x20, //       mov $0x2000, %ax
    0x8e, 0xd8, //             mov %ax, %ds        DS:0 is guest-physical 0x20000, the hole
    0xc6, 0x06, 0x00, 0x00, 0x58, // movb $'X', 0  a write to the hole: an MMIO exit
    0x31, 0xdb, //             xor %bx, %bx
    0x8a, 0x1e, 0x00, 0x00, // mov 0, %bl          a read from the hole: an MMIO exit
    0xb0, 0x02, //             mov $2, %al
    0xee, //                   out %al, (%dx)      PUTNUM(what the read found)
    0xb0, 0x03, //             mov $3, %al
    0xee, //                   out %al, (%dx)      NEWLINE
    0x31, 0xdb, //             xor %bx, %bx
    0xb0, 0x00, //             mov $0, %al
    0xee, //                   out %al, (%dx)      EXIT(0)
    b'H', b'e', b'l', b'l', b'o', b' ', b'f', b'r', b'o', b'm', b' ', b's', b'l', b'o', b't', b' ',
    b'1', b'!', b'\n', // message, 19 bytes
];

fn main() -> ExitCode {
    match run() {
        // The guest's EXIT status becomes this process's exit status.
        Ok(status) => ExitCode::from(status),
        Err(message) => {
            eprintln!("ex04: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<u8, String> {
    // Guest RAM is ordinary memory of this process. It is made first so that it is dropped
    // last: KVM points into it for as long as the VM exists.
    let load_address = GuestAddress(u64::from(LOAD_SEGMENT) * 16);
    let memory = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(SLOT_0.0), SLOT_0.1),
        (GuestAddress(SLOT_1.0), SLOT_1.1),
    ])
    .map_err(|e| format!("cannot map guest memory: {e}"))?;
    memory
        .write_slice(GUEST, load_address)
        .map_err(|e| format!("cannot load the guest: {e}"))?;

    let kvm = Kvm::new().map_err(|e| format!("cannot open /dev/kvm: {e}"))?;
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    register_memory(&vm, &memory)?;
    let mut vcpu = create_vcpu(&vm, load_address)?;

    print_memory_map();
    run_loop(&mut vcpu, &memory)
}

/// What the guest sees at each guest-physical address.
fn print_memory_map() {
    println!("[vmm] guest-physical memory:");
    let ranges = [
        (SLOT_0, "slot 0, RAM: the program at 0x10000, its stack"),
        (HOLE, "no slot: an access is an MMIO exit"),
        (SLOT_1, "slot 1, RAM"),
    ];
    for ((start, len), what) in ranges {
        let end = start + len as u64 - 1;
        println!(
            "[vmm]   {start:#07x}-{end:#07x} {:>4} KiB  {what}",
            len / 1024
        );
    }
}

/// KVM_RUN until the guest calls EXIT; returns its status. Each exit is answered here, and the
/// next KVM_RUN finishes the guest's instruction (an `in` gets the value we put in `data`).
fn run_loop(vcpu: &mut VcpuFd, memory: &GuestMemoryMmap) -> Result<u8, String> {
    let mut exits: u64 = 0;
    // The counter's state lives in the VMM, like every emulated device's.
    let mut counter: u8 = 0;
    loop {
        let exit = vcpu.run().map_err(|e| format!("KVM_RUN: {e}"))?;
        exits += 1;
        match exit {
            VcpuExit::IoOut(UART_DATA, data) => {
                let _ = std::io::stdout().write_all(data);
            }
            VcpuExit::IoIn(UART_LINE_STATUS, data) => data[0] = LSR_THR_EMPTY,
            VcpuExit::IoOut(HYPERCALL_PORT, data) => {
                let number = data[0];
                if let Some(status) = hypercall(vcpu, memory, number)? {
                    println!("[vmm] the guest called EXIT({status}) after {exits} VM exits");
                    return Ok(status);
                }
            }
            // No device behind these ports: reads see all ones (as on a PC's empty bus), and
            // writes are dropped.
            VcpuExit::IoIn(_, data) => data.fill(0xff),
            VcpuExit::IoOut(..) => {}
            // The counter: a write counts, whatever its value; a read gets the count.
            VcpuExit::MmioWrite(COUNTER_ADDRESS, data) => {
                counter = counter.wrapping_add(1);
                println!("[vmm] MMIO write at {COUNTER_ADDRESS:#x}: {data:02x?}, counted");
            }
            VcpuExit::MmioRead(COUNTER_ADDRESS, data) => {
                data.fill(0);
                data[0] = counter;
                println!("[vmm] MMIO read at {COUNTER_ADDRESS:#x}: answered {data:02x?}");
            }
            // Any other guest-physical address outside every slot: KVM does not know what is
            // there, so it decodes the instruction and asks us. No device: the bus's rule.
            VcpuExit::MmioWrite(address, data) => {
                println!("[vmm] MMIO write at {address:#x}: {data:02x?}, dropped");
            }
            VcpuExit::MmioRead(address, data) => {
                data.fill(0xff);
                println!("[vmm] MMIO read at {address:#x}: answered {data:02x?}");
            }
            other => return Err(format!("the guest stopped with {other:?}")),
        }
    }
}

/// Runs hypercall `number` with the guest's registers as arguments; `Some(status)` for EXIT.
fn hypercall(vcpu: &VcpuFd, memory: &GuestMemoryMmap, number: u8) -> Result<Option<u8>, String> {
    let mut regs = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
    // Real mode: the arguments are the 16-bit registers.
    let arg0 = regs.rbx & 0xffff;
    let arg1 = regs.rcx & 0xffff;
    let mut stdout = std::io::stdout();
    let result = match number {
        HC_EXIT => match u8::try_from(arg0) {
            Ok(status) => return Ok(Some(status)),
            Err(_) => E_INVALID_ARGUMENT,
        },
        HC_PUTCHAR => {
            let _ = stdout.write_all(&[arg0 as u8]);
            0
        }
        HC_PUTNUM => {
            let _ = write!(stdout, "{arg0}");
            0
        }
        HC_NEWLINE => {
            let _ = writeln!(stdout);
            0
        }
        HC_WRITE => {
            // A pointer is an offset in the guest's data segment: guest-physical address =
            // DS base + offset (real mode, no paging). The whole range must be RAM, or nothing
            // is read: vm-memory checks that for us.
            let sregs = vcpu
                .get_sregs()
                .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
            let mut text = vec![0; arg1 as usize];
            match memory.read_slice(&mut text, GuestAddress(sregs.ds.base + arg0)) {
                Ok(()) => {
                    let _ = stdout.write_all(&text);
                    arg1 as i64
                }
                Err(_) => E_FAULT,
            }
        }
        _ => E_UNKNOWN_CALL,
    };
    // The result goes to AX, where the guest finds it after its `out`. (Negative numbers are
    // all ones at the top: -1 is 0xffff in AX.)
    regs.rax = result as u64;
    vcpu.set_regs(&regs)
        .map_err(|e| format!("KVM_SET_REGS: {e}"))?;
    Ok(None)
}

/// Tells KVM where each region of `memory` is in the guest: one memory slot per region.
fn register_memory(vm: &VmFd, memory: &GuestMemoryMmap) -> Result<(), String> {
    for (slot, region) in memory.iter().enumerate() {
        let host_address = memory
            .get_host_address(region.start_addr())
            .map_err(|e| format!("guest memory has no host address: {e}"))?;
        let region = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host_address as u64,
        };
        // SAFETY: the memory stays mapped as long as the VM exists (see `run`).
        unsafe { vm.set_user_memory_region(region) }
            .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION: {e}"))?;
    }
    Ok(())
}

/// Creates vCPU 0 and points it at the guest: real mode, CS:IP = 1000:0000.
fn create_vcpu(vm: &VmFd, load_address: GuestAddress) -> Result<VcpuFd, String> {
    let vcpu = vm
        .create_vcpu(0)
        .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
    // A new vCPU is in real mode already, at the reset vector F000:FFF0. Point every segment
    // at the guest instead; in real mode a segment's base is its selector times 16.
    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    for segment in [
        &mut sregs.cs,
        &mut sregs.ds,
        &mut sregs.es,
        &mut sregs.fs,
        &mut sregs.gs,
        &mut sregs.ss,
    ] {
        segment.selector = LOAD_SEGMENT;
        segment.base = load_address.0;
    }
    vcpu.set_sregs(&sregs)
        .map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
    let mut regs = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
    regs.rip = 0;
    regs.rsp = 0;
    regs.rflags = 0x2; // bit 1 is always set; IF = 0: no interrupts
    vcpu.set_regs(&regs)
        .map_err(|e| format!("KVM_SET_REGS: {e}"))?;
    Ok(vcpu)
}
