//! Solution to exercise ex03 of the book "Write a hypervisor with mini-kvm"
//! (book/src/exercises.md): Step 2 with a hypercall of our own, WRITE, which prints a whole
//! buffer of guest memory in one VM exit. `cargo run --example ex03_write_hypercall`;
//! `diff examples/step02_port_io.rs book/solutions/ex03_write_hypercall.rs` shows the answer.
//!
//! The guest no longer sends its line through the UART, a byte and a status read at a time
//! (42 exits for 21 bytes): it passes the line's address and length to WRITE, and the VMM
//! reads the bytes out of guest memory itself. The run takes 4 exits instead of 45: WRITE,
//! PUTNUM, NEWLINE and EXIT.

use std::io::Write;
use std::process::ExitCode;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// 1 MiB of guest RAM: all that real mode can address.
const RAM_SIZE: usize = 1 << 20;
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

/// The guest: 16-bit real-mode code, assembled by hand (`as --32` with `.code16` gives the same).
const GUEST: &[u8] = &[
    0xbb, 0x1b, 0x00, //       mov $message, %bx   arg0: the text at offset 0x1b (DS = CS)
    0xb9, 0x15, 0x00, //       mov $21, %cx        arg1: its length
    0xba, 0x00, 0x05, //       mov $0x500, %dx     the hypercall port
    0xb0, 0x05, //             mov $5, %al
    0xee, //                   out %al, (%dx)      WRITE(message, 21): one VM exit
    0xbb, 0x2a, 0x00, //       mov $42, %bx
    0xb0, 0x02, //             mov $2, %al
    0xee, //                   out %al, (%dx)      PUTNUM(42)
    0xb0, 0x03, //             mov $3, %al
    0xee, //                   out %al, (%dx)      NEWLINE
    0xbb, 0x00, 0x00, //       mov $0, %bx
    0xb0, 0x00, //             mov $0, %al
    0xee, //                   out %al, (%dx)      EXIT(0): the VMM does not come back
    b'H', b'e', b'l', b'l', b'o', b' ', b'f', b'r', b'o', b'm', b' ', b'p', b'o', b'r', b't', b' ',
    b'I', b'/', b'O', b'!', b'\n', // message: 21 bytes, no terminating zero needed
];

fn main() -> ExitCode {
    match run() {
        // The guest's EXIT status becomes this process's exit status.
        Ok(status) => ExitCode::from(status),
        Err(message) => {
            eprintln!("ex03: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<u8, String> {
    // Guest RAM is ordinary memory of this process. It is made first so that it is dropped
    // last: KVM points into it for as long as the VM exists.
    let load_address = GuestAddress(u64::from(LOAD_SEGMENT) * 16);
    let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM_SIZE)])
        .map_err(|e| format!("cannot map guest memory: {e}"))?;
    memory
        .write_slice(GUEST, load_address)
        .map_err(|e| format!("cannot load the guest: {e}"))?;

    let kvm = Kvm::new().map_err(|e| format!("cannot open /dev/kvm: {e}"))?;
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    register_memory(&vm, &memory)?;
    let mut vcpu = create_vcpu(&vm, load_address)?;

    run_loop(&mut vcpu, &memory)
}

/// KVM_RUN until the guest calls EXIT; returns its status. Each exit is answered here, and the
/// next KVM_RUN finishes the guest's instruction (an `in` gets the value we put in `data`).
fn run_loop(vcpu: &mut VcpuFd, memory: &GuestMemoryMmap) -> Result<u8, String> {
    let mut exits: u64 = 0;
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
            // The pointer is an offset in the guest's data segment: guest-physical = DS base +
            // BX. `read_slice` fails, instead of reading something else, unless the whole
            // range is guest RAM.
            let sregs = vcpu
                .get_sregs()
                .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
            let mut buffer = vec![0u8; arg1 as usize];
            match memory.read_slice(&mut buffer, GuestAddress(sregs.ds.base + arg0)) {
                Ok(()) => {
                    let _ = stdout.write_all(&buffer);
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

/// Tells KVM that guest-physical 0 onwards is `memory`: memory slot 0.
fn register_memory(vm: &VmFd, memory: &GuestMemoryMmap) -> Result<(), String> {
    let host_address = memory
        .get_host_address(GuestAddress(0))
        .map_err(|e| format!("guest memory has no host address: {e}"))?;
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: RAM_SIZE as u64,
        userspace_addr: host_address as u64,
    };
    // SAFETY: the memory stays mapped as long as the VM exists (see `run`).
    unsafe { vm.set_user_memory_region(region) }
        .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION: {e}"))
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
