//! Solution to exercise ex05 of the book "Write a hypervisor with mini-kvm"
//! (book/src/exercises.md): Step 1 with a guest that enters protected mode itself.
//! `cargo run --example ex05_protected_mode`; `diff examples/step01_first_exit.rs
//! book/solutions/ex05_protected_mode.rs` shows the whole answer.
//!
//! The VMM still starts the vCPU in real mode, exactly as Step 1 does: every line of
//! `create_vcpu` is still needed, since the guest's first instructions are 16-bit code that
//! uses CS and DS. The guest brings its own GDT, loads it with `lgdtl`, sets CR0.PE, and
//! reloads CS with a far jump to 32-bit code, where it multiplies two numbers whose product
//! needs 32 bits. After the exit, the VMM reads the mode the vCPU is in from its registers.

use std::process::ExitCode;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// 1 MiB of guest RAM: all that real mode can address.
const RAM_SIZE: usize = 1 << 20;
/// The guest runs at segment 0x1000, offset 0: guest-physical 0x10000.
const LOAD_SEGMENT: u16 = 0x1000;

/// The guest, assembled with `as --32` (16-bit code first, then `.code32`), at offset 0 of
/// segment 0x1000: guest-physical 0x10000.
const GUEST: &[u8] = &[
    0xfa, //                               cli                     (.code16)
    0x66, 0x0f, 0x01, 0x16, 0x36, 0x00, // lgdtl gdt_pointer       DS:0x36, below
    0x0f, 0x20, 0xc0, //                   mov %cr0, %eax
    0x66, 0x83, 0xc8, 0x01, //             or $1, %eax             CR0.PE
    0x0f, 0x22, 0xc0, //                   mov %eax, %cr0          protected mode, but CS is
    //                                                             still the real-mode one...
    0x66, 0xea, 0x19, 0x00, 0x01, 0x00, // ljmpl $0x08, $0x10019   ...until this far jump
    0x08, 0x00, //                                                 loads it from the GDT
    0xb8, 0x60, 0xea, 0x00, 0x00, //       mov $60000, %eax        (.code32, at 0x10019)
    0xbb, 0x70, 0x11, 0x01, 0x00, //       mov $70000, %ebx
    0xf7, 0xe3, //                         mul %ebx                EDX:EAX = EAX × EBX
    0xf4, //                               hlt
    0, 0, 0, 0, 0, 0, 0, 0, //             gdt (0x26): the null descriptor
    0xff, 0xff, 0x00, 0x00, //             0x08: code, base 0, limit 4 GiB, 32-bit
    0x00, 0x9a, 0xcf, 0x00, //             (0x00cf9a000000ffff, as in Step 4)
    0x0f, 0x00, //                         gdt_pointer (0x36): the limit, 2 entries − 1
    0x26, 0x00, 0x01, 0x00, //             and the GDT's linear address, 0x10026
];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("ex05: {message}");
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
    // The mode is in the registers: CR0.PE, and the D bit of CS's hidden part, which the far
    // jump loaded from the GDT.
    let mode = match (sregs.cr0 & 1, sregs.cs.db) {
        (0, _) => "real mode",
        (_, 0) => "16-bit protected mode",
        _ => "32-bit protected mode",
    };
    println!(
        "[vmm] VM exit: KVM_EXIT_HLT in {mode}, CS = {:#04x}",
        sregs.cs.selector
    );
    println!("[vmm] the guest left EAX = {}", regs.rax & 0xffff_ffff);
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
