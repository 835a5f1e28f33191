//! Solution to exercise ex01 of the book "Write a hypervisor with mini-kvm"
//! (book/src/exercises.md): Step 1's guest computes 6 + 7 instead of 6 × 7.
//! `cargo run --example ex01_add`; `diff examples/step01_first_exit.rs book/solutions/ex01_add.rs`
//! shows the whole answer.
//!
//! `add %bl, %al` is two bytes long, as `mul %bl` was, so the `hlt` stays at offset 6 and the
//! exit is still reported at 1000:0007: only the value the guest leaves in AX changes.

use std::process::ExitCode;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// 1 MiB of guest RAM: all that real mode can address.
const RAM_SIZE: usize = 1 << 20;
/// The guest runs at segment 0x1000, offset 0: guest-physical 0x10000.
const LOAD_SEGMENT: u16 = 0x1000;

/// The guest: 16-bit real-mode code, assembled by hand (`as --32` with `.code16` gives the same).
const GUEST: &[u8] = &[
    0xb0, 0x06, // mov $6, %al
    0xb3, 0x07, // mov $7, %bl
    0x00, 0xd8, // add %bl, %al  AL = AL + BL (AH stays 0)
    0xf4, //       hlt         wait for an interrupt; KVM leaves that to us: KVM_EXIT_HLT
];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("ex01: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
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

    // KVM_RUN: the guest runs until it does something KVM hands back to us.
    match vcpu.run().map_err(|e| format!("KVM_RUN: {e}"))? {
        VcpuExit::Hlt => {}
        other => return Err(format!("the guest stopped with {other:?}, not at hlt")),
    }
    let regs = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
    let sregs = vcpu
        .get_sregs()
        .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    println!(
        "[vmm] VM exit: KVM_EXIT_HLT at {:04x}:{:04x}",
        sregs.cs.selector, regs.rip
    );
    println!("[vmm] the guest left AX = {}", regs.rax & 0xffff);
    Ok(())
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
