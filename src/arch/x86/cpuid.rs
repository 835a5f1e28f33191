//! CPUID for guests outside real mode.
//!
//! A new vCPU has an empty CPUID table, and KVM checks control-register and EFER bits against it:
//! without the "long mode" bit (leaf 0x80000001, EDX bit 29), `KVM_SET_SREGS` refuses EFER.LME,
//! and a guest's own `wrmsr` to EFER faults. So protected- and long-mode guests get what the host
//! KVM supports (`KVM_GET_SUPPORTED_CPUID`), unchanged: their `cpuid` then tells them the truth.

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::Kvm;

/// The CPUID table to give a vCPU: everything the host KVM can offer.
pub fn supported_cpuid(kvm: &Kvm) -> Result<CpuId, kvm_ioctls::Error> {
    kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
}
