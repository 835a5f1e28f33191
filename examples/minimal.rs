//! The smallest VMM: read this first. `cargo run --example minimal` runs a 42-byte real-mode
//! guest (15 bytes of code and its text) that prints a line through a UART port; `cargo run --example minimal -- GUEST.bin` runs
//! a real-mode flat binary of your own (mini-kvm's `hello`, say), loaded at 0x10000.
//!
//! A VMM on KVM is five steps, each one ioctl or two:
//! 1. open `/dev/kvm` and create a VM (`KVM_CREATE_VM`);
//! 2. give it RAM: map host memory, tell KVM where it sits in the guest (`KVM_SET_USER_MEMORY_REGION`);
//! 3. create a vCPU (`KVM_CREATE_VCPU`) and set its registers: real mode, CS:IP = 1000:0000;
//! 4. `KVM_RUN`: the guest runs until it does something the CPU cannot finish alone, a *VM exit*;
//! 5. handle the exit (here: print a byte written to port 0x3f8, stop at `hlt`) and run again.
//!
//! mini-kvm is these steps plus devices, loaders, several CPUs and reports. This file is also
//! mini-kvm's benchmark floor: `src/bench/floor.rs` includes it, and `mini-kvm bench` compares
//! mini-kvm with this loop, so the difference is the cost of being a VMM.

use std::io::Write;
use std::time::{Duration, Instant};

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// 1 MiB of guest RAM: all that real mode can address.
const RAM_SIZE: usize = 1 << 20;
/// The guest runs at segment 0x1000, offset 0: guest-physical 0x10000.
const LOAD_SEGMENT: u16 = 0x1000;
/// COM1's transmit register: a byte written here is a byte of output.
const UART_PORT: u16 = 0x3f8;
/// mini-kvm's hypercall port: a 0 written here is the EXIT call (docs/hypercall-abi.md).
const HYPERCALL_PORT: u16 = 0x500;

/// The default guest, hand-assembled (16-bit code, DS = CS):
const HELLO: &[u8] = &[
    0xba, 0xf8, 0x03, //       mov $0x3f8, %dx      the UART's port
    0xbe, 0x0f, 0x00, //       mov $message, %si    the text below, at offset 0x0f
    0xac, //             next: lodsb                AL = next byte of the text
    0x84, 0xc0, //             test %al, %al
    0x74, 0x03, //             jz done              a zero byte ends the text
    0xee, //                   out %al, (%dx)       a VM exit: KVM_EXIT_IO
    0xeb, 0xf8, //             jmp next
    0xf4, //             done: hlt                  no in-kernel irqchip: a VM exit, KVM_EXIT_HLT
    b'H', b'e', b'l', b'l', b'o', b' ', b'f', b'r', b'o', b'm', b' ', b'a', b' ', b'm', b'i', b'n',
    b'i', b'm', b'a', b'l', b' ', b'V', b'M', b'M', b'!', b'\n', 0,
];

/// A VM with one vCPU, ready to run the image at 1000:0000.
pub struct MinimalVm {
    // Field order is drop order: the vCPU and the VM go before the memory KVM points into.
    vcpu: VcpuFd,
    _vm: VmFd,
    _memory: GuestMemoryMmap,
}

impl MinimalVm {
    /// Steps 1 to 3. Errors say which step failed.
    pub fn new(kvm: &Kvm, image: &[u8]) -> Result<MinimalVm, String> {
        let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;

        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM_SIZE)])
            .map_err(|e| format!("cannot map guest memory: {e}"))?;
        let load_address = GuestAddress(u64::from(LOAD_SEGMENT) * 16);
        memory.write_slice(image, load_address).map_err(|_| {
            format!(
                "a {}-byte image does not fit in 1 MiB at 0x10000",
                image.len()
            )
        })?;
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
        // SAFETY: the memory stays mapped as long as the VM does (the field order above).
        unsafe { vm.set_user_memory_region(region) }
            .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION: {e}"))?;

        let vcpu = vm
            .create_vcpu(0)
            .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
        // A new vCPU is in real mode already, at the reset vector F000:FFF0. Point every segment
        // at the image instead; in real mode a segment's base is its selector times 16.
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
        // Bit 1 is always set; IF = 0: interrupts off (this VM has no interrupt controller anyway).
        // Without an in-kernel irqchip, KVM cannot wait for an interrupt itself, so every `hlt`
        // returns from KVM_RUN as KVM_EXIT_HLT, whatever IF says, and `run` ends the guest there.
        regs.rflags = 0x2;
        vcpu.set_regs(&regs)
            .map_err(|e| format!("KVM_SET_REGS: {e}"))?;

        Ok(MinimalVm {
            vcpu,
            _vm: vm,
            _memory: memory,
        })
    }

    /// Steps 4 and 5, until `hlt` or mini-kvm's EXIT hypercall: UART bytes go to `console`,
    /// other port accesses are ignored. Returns the time in the loop and the number of exits.
    pub fn run(&mut self, console: &mut dyn Write) -> Result<(Duration, u64), String> {
        let mut exits = 0;
        let started = Instant::now();
        loop {
            let exit = self.vcpu.run().map_err(|e| format!("KVM_RUN: {e}"))?;
            exits += 1;
            match exit {
                VcpuExit::IoOut(UART_PORT, data) => {
                    let _ = console.write_all(data);
                }
                VcpuExit::IoOut(HYPERCALL_PORT, [0]) => break,
                VcpuExit::IoOut(..) | VcpuExit::IoIn(..) => {}
                VcpuExit::Hlt => break,
                other => return Err(format!("the guest stopped with {other:?}")),
            }
        }
        Ok((started.elapsed(), exits))
    }
}

fn main() -> std::process::ExitCode {
    let image = match std::env::args_os().nth(1) {
        Some(path) => match std::fs::read(&path) {
            Ok(image) => image,
            Err(e) => {
                eprintln!("minimal: cannot read {}: {e}", path.to_string_lossy());
                return std::process::ExitCode::FAILURE;
            }
        },
        None => HELLO.to_vec(),
    };
    let result = Kvm::new()
        .map_err(|e| format!("cannot open /dev/kvm: {e}"))
        .and_then(|kvm| MinimalVm::new(&kvm, &image))
        .and_then(|mut vm| vm.run(&mut std::io::stdout()));
    match result {
        Ok((time, exits)) => {
            eprintln!(
                "minimal: {exits} VM exits in {:.3} ms",
                time.as_secs_f64() * 1e3
            );
            std::process::ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("minimal: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
