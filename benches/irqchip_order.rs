//! What the in-kernel interrupt controller costs, and where in the setup to create it.
//!
//! `cargo bench --bench irqchip_order` times `open("/dev/kvm")` → first `KVM_RUN` returned for a
//! one-instruction guest (`hlt` with interrupts off), with the irqchip and PIT:
//! - never created (what a real-mode flat binary gets without `--irqchip`),
//! - created *after* `KVM_SET_USER_MEMORY_REGION` (mini-kvm's order, src/vmm/builder.rs),
//! - created *before* it.
//!
//! It prints a table (median and min of many runs); nothing is asserted: figures vary by host.
//! With the irqchip, `hlt` waits in the kernel, so those guests end with `out` to a port instead.

use std::time::{Duration, Instant};

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

const RUNS: usize = 40;
const RAM: usize = 1 << 20;

#[derive(Clone, Copy, PartialEq)]
enum Irqchip {
    None,
    AfterMemory,
    BeforeMemory,
}

fn one_run(irqchip: Irqchip) -> Duration {
    let started = Instant::now();
    let kvm = Kvm::new().expect("open /dev/kvm");
    let vm = kvm.create_vm().expect("KVM_CREATE_VM");
    let create_irqchip = || {
        vm.create_irq_chip().expect("KVM_CREATE_IRQCHIP");
        vm.create_pit2(kvm_pit_config::default())
            .expect("KVM_CREATE_PIT2");
    };
    if irqchip == Irqchip::BeforeMemory {
        create_irqchip();
    }
    let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM)]).unwrap();
    // out %al,$0x80 : one exit to user space, with or without an irqchip.
    memory
        .write_slice(&[0xe6, 0x80], GuestAddress(0x10000))
        .unwrap();
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: RAM as u64,
        userspace_addr: memory.get_host_address(GuestAddress(0)).unwrap() as u64,
    };
    // SAFETY: `memory` outlives the VM (both are dropped at the end of this function, VM first).
    unsafe { vm.set_user_memory_region(region) }.expect("KVM_SET_USER_MEMORY_REGION");
    if irqchip == Irqchip::AfterMemory {
        create_irqchip();
    }
    let mut vcpu = vm.create_vcpu(0).expect("KVM_CREATE_VCPU");
    let mut sregs = vcpu.get_sregs().unwrap();
    for segment in [&mut sregs.cs, &mut sregs.ds, &mut sregs.es, &mut sregs.ss] {
        segment.base = 0x10000;
        segment.selector = 0x1000;
    }
    vcpu.set_sregs(&sregs).unwrap();
    let mut regs = vcpu.get_regs().unwrap();
    regs.rip = 0;
    regs.rflags = 2;
    vcpu.set_regs(&regs).unwrap();
    match vcpu.run() {
        Ok(VcpuExit::IoOut(0x80, _)) => {}
        other => panic!("unexpected first exit: {other:?}"),
    }
    let elapsed = started.elapsed();
    drop(vcpu);
    drop(vm);
    drop(memory);
    elapsed
}

fn main() {
    println!("open(/dev/kvm) -> first KVM_RUN returned, {RUNS} runs each, 1 MiB RAM");
    println!(
        "{:<40} {:>10} {:>10}",
        "irqchip + PIT2", "median ms", "min ms"
    );
    for (name, irqchip) in [
        ("none", Irqchip::None),
        ("after KVM_SET_USER_MEMORY_REGION", Irqchip::AfterMemory),
        ("before KVM_SET_USER_MEMORY_REGION", Irqchip::BeforeMemory),
    ] {
        // One warm-up run, so that the first case does not pay for page faults in the binary.
        one_run(irqchip);
        let mut times: Vec<Duration> = (0..RUNS).map(|_| one_run(irqchip)).collect();
        times.sort();
        println!(
            "{name:<40} {:>10.3} {:>10.3}",
            times[RUNS / 2].as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3
        );
    }
}
