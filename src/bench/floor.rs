//! The floor: the same real-mode guests run by the least code that can run them, directly on
//! kvm-ioctls. No bus, no devices, no statistics, no registers read: `KVM_RUN`, look at the
//! port, `KVM_RUN` again. What mini-kvm measures against this is the cost of being a VMM.

use std::io::Write;
use std::time::{Duration, Instant};

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::BenchError;
use crate::arch::x86::layout::{REAL_MODE_LOAD_ADDRESS, REAL_MODE_SEGMENT};
use crate::arch::x86::modes::setup_real_mode;

const RAM: usize = 1 << 20;
const HYPERCALL_PORT: u16 = 0x500;
const UART_PORT: u16 = 0x3f8;

fn kvm_call(call: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> BenchError {
    move |source| BenchError::Kvm { call, source }
}

/// A bare VM: 1 MiB of RAM, the image at 0x10000, one vCPU in real mode at 1000:0000.
pub struct BareVm {
    // Field order is drop order: the vCPU and the VM go before the memory KVM points into.
    vcpu: VcpuFd,
    _vm: VmFd,
    _memory: GuestMemoryMmap,
}

impl BareVm {
    pub fn new(kvm: &Kvm, image: &[u8]) -> Result<BareVm, BenchError> {
        let vm = kvm.create_vm().map_err(kvm_call("KVM_CREATE_VM"))?;
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM)])
            .map_err(|_| BenchError::Setup("cannot map 1 MiB of guest memory"))?;
        memory
            .write_slice(image, GuestAddress(REAL_MODE_LOAD_ADDRESS))
            .map_err(|_| BenchError::Setup("the image does not fit in 1 MiB"))?;
        let host = memory
            .get_host_address(GuestAddress(0))
            .map_err(|_| BenchError::Setup("guest memory has no host address"))?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: RAM as u64,
            userspace_addr: host as u64,
        };
        // SAFETY: `memory` stays mapped as long as the VM (see the field order above).
        unsafe { vm.set_user_memory_region(region) }
            .map_err(kvm_call("KVM_SET_USER_MEMORY_REGION"))?;
        let vcpu = vm.create_vcpu(0).map_err(kvm_call("KVM_CREATE_VCPU"))?;
        let mut sregs = vcpu.get_sregs().map_err(kvm_call("KVM_GET_SREGS"))?;
        let mut regs = vcpu.get_regs().map_err(kvm_call("KVM_GET_REGS"))?;
        setup_real_mode(&mut sregs, &mut regs, REAL_MODE_SEGMENT);
        vcpu.set_sregs(&sregs).map_err(kvm_call("KVM_SET_SREGS"))?;
        vcpu.set_regs(&regs).map_err(kvm_call("KVM_SET_REGS"))?;
        Ok(BareVm {
            vcpu,
            _vm: vm,
            _memory: memory,
        })
    }

    /// Runs until the guest's EXIT hypercall or `hlt`. Every `out` to the hypercall port is
    /// counted and nothing more (its result register is left alone); bytes for the UART go to
    /// `console`. Returns the time spent in the loop and the number of exits.
    pub fn run(&mut self, console: &mut dyn Write) -> Result<(Duration, u64), BenchError> {
        let mut exits = 0;
        let started = Instant::now();
        loop {
            let exit = self.vcpu.run().map_err(kvm_call("KVM_RUN"))?;
            exits += 1;
            match exit {
                VcpuExit::IoOut(HYPERCALL_PORT, data) if data.first() == Some(&0) => break,
                VcpuExit::IoOut(HYPERCALL_PORT, _) => {}
                VcpuExit::IoOut(UART_PORT, data) => {
                    let _ = console.write_all(data);
                }
                VcpuExit::IoOut(..) | VcpuExit::IoIn(..) => {}
                VcpuExit::Hlt => break,
                other => return Err(BenchError::Guest(format!("unexpected exit {other:?}"))),
            }
        }
        Ok((started.elapsed(), exits))
    }
}

/// The floor of `mini-kvm bench`'s start-up row: run a real-mode guest, its UART bytes to
/// stdout (the hidden `mini-kvm bench-floor` command, so that both sides pay the same process
/// start).
pub fn run_to_stdout(image: &[u8]) -> Result<(), BenchError> {
    let kvm = Kvm::new().map_err(kvm_call("open /dev/kvm"))?;
    let mut vm = BareVm::new(&kvm, image)?;
    let mut stdout = std::io::stdout();
    vm.run(&mut stdout)?;
    let _ = stdout.flush();
    Ok(())
}
