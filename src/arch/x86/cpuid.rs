//! CPUID for guests outside real mode, one table per vCPU.
//!
//! A new vCPU has an empty CPUID table, and KVM checks control-register and EFER bits against it:
//! without the "long mode" bit (leaf 0x80000001, EDX bit 29), `KVM_SET_SREGS` refuses EFER.LME,
//! and a guest's own `wrmsr` to EFER faults. So every vCPU gets what the host KVM supports
//! (`KVM_GET_SUPPORTED_CPUID`), with one change per vCPU: its APIC ID, so that a guest can tell
//! its CPUs apart and match them with the MP table (mptable.rs). The APIC ID of vCPU `n` is `n`,
//! as KVM gives its local APIC. And one change for all: the "hypervisor present" bit (leaf 1,
//! ECX bit 31), which KVM leaves to the VMM. A guest that sees it looks for KVM's own leaves
//! (0x40000000: "KVMKVMKVM"); Linux then takes its clock (kvm-clock) and the TSC's frequency
//! from KVM instead of measuring them against the PIT. And the TSC-deadline timer, which KVM
//! emulates but does not list ([`supported_cpuid`]).

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Cap, Kvm};

/// Leaf 1, ECX bit 31: "running under a hypervisor" (reserved for that on real CPUs).
const HYPERVISOR_PRESENT: u32 = 1 << 31;

/// Leaf 1, ECX bit 24: the local APIC timer has the TSC-deadline mode.
const TSC_DEADLINE_TIMER: u32 = 1 << 24;

/// Everything the host KVM can offer. That includes the TSC-deadline timer, which KVM's local
/// APIC emulates but `KVM_GET_SUPPORTED_CPUID` leaves out: KVM says so with
/// `KVM_CAP_TSC_DEADLINE_TIMER`, and the VMM sets the bit (QEMU does the same). With it, Linux
/// programs its timer interrupts as TSC deadlines instead of calibrating the APIC timer.
pub fn supported_cpuid(kvm: &Kvm) -> Result<CpuId, kvm_ioctls::Error> {
    let mut cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)?;
    if kvm.check_extension(Cap::TscDeadlineTimer) {
        offer_tsc_deadline(&mut cpuid);
    }
    Ok(cpuid)
}

fn offer_tsc_deadline(cpuid: &mut CpuId) {
    for entry in cpuid.as_mut_slice() {
        if entry.function == 1 {
            entry.ecx |= TSC_DEADLINE_TIMER;
        }
    }
}

/// The table for vCPU `apic_id` of `cpu_count`: `supported` with the CPU's APIC ID in leaf 1
/// (EBX bits 31-24, the "initial APIC ID"), in the x2APIC topology leaves 0xB and 0x1F (EDX),
/// and the logical processor count in leaf 1 (EBX bits 23-16).
pub fn for_vcpu(supported: &CpuId, apic_id: u32, cpu_count: u32) -> CpuId {
    let mut cpuid = supported.clone();
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            1 => {
                entry.ebx =
                    (entry.ebx & 0x0000_ffff) | (apic_id << 24) | (cpu_count.min(255) << 16);
                entry.ecx |= HYPERVISOR_PRESENT;
            }
            0xb | 0x1f => entry.edx = apic_id,
            _ => {}
        }
    }
    cpuid
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    #[test]
    fn the_tsc_deadline_bit_goes_into_leaf_1() {
        let entries = [
            kvm_cpuid_entry2 {
                function: 1,
                ecx: 0x8,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 7,
                ..Default::default()
            },
        ];
        let mut cpuid = CpuId::from_entries(&entries).unwrap();
        offer_tsc_deadline(&mut cpuid);
        assert_eq!(cpuid.as_slice()[0].ecx, 0x8 | (1 << 24));
        assert_eq!(cpuid.as_slice()[1].ecx, 0);
    }

    #[test]
    fn each_vcpu_gets_its_apic_id() {
        let entries = [
            kvm_cpuid_entry2 {
                function: 1,
                ebx: 0xff01_0800,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 1,
                edx: 7,
                ..Default::default()
            },
        ];
        let supported = CpuId::from_entries(&entries).unwrap();
        let cpuid = for_vcpu(&supported, 3, 4);
        assert_eq!(cpuid.as_slice()[0].ebx, 0x0304_0800);
        assert_eq!(cpuid.as_slice()[0].ecx, HYPERVISOR_PRESENT);
        assert_eq!(cpuid.as_slice()[1].edx, 3);
    }
}
