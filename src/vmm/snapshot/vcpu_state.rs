//! One vCPU's state: everything KVM keeps for a virtual CPU that the guest could notice if it
//! changed, read with one `KVM_GET_*` call per part and put back with the matching `KVM_SET_*`.
//! The registers a person looks for (general purpose, control, segments) are written by name;
//! KVM's larger binary structures (the local APIC page, pending events) as hex.

use kvm_bindings::{
    CpuId, KVM_MAX_CPUID_ENTRIES, Msrs, kvm_cpuid_entry2, kvm_dtable, kvm_fpu, kvm_mp_state,
    kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs,
};
use kvm_ioctls::VcpuFd;
use serde::{Deserialize, Serialize};

use super::SnapshotError;
use super::hex::{self, u64_text};

/// What the host's KVM can save besides the basics, asked once when the VM is built.
#[derive(Debug, Clone, Default)]
pub struct VcpuCapabilities {
    /// The MSRs KVM saves and restores (KVM_GET_MSR_INDEX_LIST).
    pub msr_indices: Vec<u32>,
    /// KVM_CAP_XSAVE: the extended state (AVX and the rest) beyond the legacy FPU area.
    pub xsave: bool,
    /// KVM_CAP_XCRS: the extended control registers (XCR0).
    pub xcrs: bool,
    /// The in-kernel irqchip: each vCPU has a local APIC.
    pub lapic: bool,
}

/// The general-purpose registers, RIP and RFLAGS (KVM_GET_REGS).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Registers {
    #[serde(with = "u64_text")]
    pub rax: u64,
    #[serde(with = "u64_text")]
    pub rbx: u64,
    #[serde(with = "u64_text")]
    pub rcx: u64,
    #[serde(with = "u64_text")]
    pub rdx: u64,
    #[serde(with = "u64_text")]
    pub rsi: u64,
    #[serde(with = "u64_text")]
    pub rdi: u64,
    #[serde(with = "u64_text")]
    pub rsp: u64,
    #[serde(with = "u64_text")]
    pub rbp: u64,
    #[serde(with = "u64_text")]
    pub r8: u64,
    #[serde(with = "u64_text")]
    pub r9: u64,
    #[serde(with = "u64_text")]
    pub r10: u64,
    #[serde(with = "u64_text")]
    pub r11: u64,
    #[serde(with = "u64_text")]
    pub r12: u64,
    #[serde(with = "u64_text")]
    pub r13: u64,
    #[serde(with = "u64_text")]
    pub r14: u64,
    #[serde(with = "u64_text")]
    pub r15: u64,
    #[serde(with = "u64_text")]
    pub rip: u64,
    #[serde(with = "u64_text")]
    pub rflags: u64,
}

impl From<&kvm_regs> for Registers {
    fn from(r: &kvm_regs) -> Registers {
        Registers {
            rax: r.rax,
            rbx: r.rbx,
            rcx: r.rcx,
            rdx: r.rdx,
            rsi: r.rsi,
            rdi: r.rdi,
            rsp: r.rsp,
            rbp: r.rbp,
            r8: r.r8,
            r9: r.r9,
            r10: r.r10,
            r11: r.r11,
            r12: r.r12,
            r13: r.r13,
            r14: r.r14,
            r15: r.r15,
            rip: r.rip,
            rflags: r.rflags,
        }
    }
}

impl From<&Registers> for kvm_regs {
    fn from(r: &Registers) -> kvm_regs {
        kvm_regs {
            rax: r.rax,
            rbx: r.rbx,
            rcx: r.rcx,
            rdx: r.rdx,
            rsi: r.rsi,
            rdi: r.rdi,
            rsp: r.rsp,
            rbp: r.rbp,
            r8: r.r8,
            r9: r.r9,
            r10: r.r10,
            r11: r.r11,
            r12: r.r12,
            r13: r.r13,
            r14: r.r14,
            r15: r.r15,
            rip: r.rip,
            rflags: r.rflags,
        }
    }
}

/// A segment register as KVM describes it: the visible selector and the hidden part the CPU
/// loaded from the descriptor table (base, limit, attributes).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Segment {
    #[serde(with = "u64_text")]
    pub base: u64,
    pub limit: u32,
    pub selector: u16,
    /// Type, present, DPL, D/B, S, L, G, AVL, unusable: the descriptor's attribute bits.
    #[serde(rename = "type")]
    pub type_: u8,
    pub present: u8,
    pub dpl: u8,
    pub db: u8,
    pub s: u8,
    pub l: u8,
    pub g: u8,
    pub avl: u8,
    pub unusable: u8,
}

impl From<&kvm_segment> for Segment {
    fn from(s: &kvm_segment) -> Segment {
        Segment {
            base: s.base,
            limit: s.limit,
            selector: s.selector,
            type_: s.type_,
            present: s.present,
            dpl: s.dpl,
            db: s.db,
            s: s.s,
            l: s.l,
            g: s.g,
            avl: s.avl,
            unusable: s.unusable,
        }
    }
}

impl From<&Segment> for kvm_segment {
    fn from(s: &Segment) -> kvm_segment {
        kvm_segment {
            base: s.base,
            limit: s.limit,
            selector: s.selector,
            type_: s.type_,
            present: s.present,
            dpl: s.dpl,
            db: s.db,
            s: s.s,
            l: s.l,
            g: s.g,
            avl: s.avl,
            unusable: s.unusable,
            padding: 0,
        }
    }
}

/// A descriptor table register (GDTR, IDTR).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Table {
    #[serde(with = "u64_text")]
    pub base: u64,
    pub limit: u16,
}

/// The special registers (KVM_GET_SREGS): segments, descriptor tables, control registers, EFER,
/// the APIC base, and the bitmap of interrupts KVM holds pending for the CPU.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SpecialRegisters {
    pub cs: Segment,
    pub ds: Segment,
    pub es: Segment,
    pub fs: Segment,
    pub gs: Segment,
    pub ss: Segment,
    pub tr: Segment,
    pub ldt: Segment,
    pub gdt: Table,
    pub idt: Table,
    #[serde(with = "u64_text")]
    pub cr0: u64,
    #[serde(with = "u64_text")]
    pub cr2: u64,
    #[serde(with = "u64_text")]
    pub cr3: u64,
    #[serde(with = "u64_text")]
    pub cr4: u64,
    #[serde(with = "u64_text")]
    pub cr8: u64,
    #[serde(with = "u64_text")]
    pub efer: u64,
    #[serde(with = "u64_text")]
    pub apic_base: u64,
    pub interrupt_bitmap: [u64; 4],
}

impl From<&kvm_sregs> for SpecialRegisters {
    fn from(s: &kvm_sregs) -> SpecialRegisters {
        let table = |t: &kvm_dtable| Table {
            base: t.base,
            limit: t.limit,
        };
        SpecialRegisters {
            cs: (&s.cs).into(),
            ds: (&s.ds).into(),
            es: (&s.es).into(),
            fs: (&s.fs).into(),
            gs: (&s.gs).into(),
            ss: (&s.ss).into(),
            tr: (&s.tr).into(),
            ldt: (&s.ldt).into(),
            gdt: table(&s.gdt),
            idt: table(&s.idt),
            cr0: s.cr0,
            cr2: s.cr2,
            cr3: s.cr3,
            cr4: s.cr4,
            cr8: s.cr8,
            efer: s.efer,
            apic_base: s.apic_base,
            interrupt_bitmap: s.interrupt_bitmap,
        }
    }
}

impl From<&SpecialRegisters> for kvm_sregs {
    fn from(s: &SpecialRegisters) -> kvm_sregs {
        let table = |t: &Table| kvm_dtable {
            base: t.base,
            limit: t.limit,
            padding: [0; 3],
        };
        kvm_sregs {
            cs: (&s.cs).into(),
            ds: (&s.ds).into(),
            es: (&s.es).into(),
            fs: (&s.fs).into(),
            gs: (&s.gs).into(),
            ss: (&s.ss).into(),
            tr: (&s.tr).into(),
            ldt: (&s.ldt).into(),
            gdt: table(&s.gdt),
            idt: table(&s.idt),
            cr0: s.cr0,
            cr2: s.cr2,
            cr3: s.cr3,
            cr4: s.cr4,
            cr8: s.cr8,
            efer: s.efer,
            apic_base: s.apic_base,
            interrupt_bitmap: s.interrupt_bitmap,
        }
    }
}

/// The legacy FPU and SSE state (KVM_GET_FPU): x87 registers, control and status words, the
/// XMM registers and MXCSR.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Fpu {
    /// ST0-ST7 (80 bits each, in 16-byte slots), as hex.
    pub st: Vec<String>,
    pub fcw: u16,
    pub fsw: u16,
    /// The abridged tag word (one bit per register: in use).
    pub ftwx: u8,
    pub last_opcode: u16,
    #[serde(with = "u64_text")]
    pub last_ip: u64,
    #[serde(with = "u64_text")]
    pub last_dp: u64,
    /// XMM0-XMM15, as hex.
    pub xmm: Vec<String>,
    pub mxcsr: u32,
}

impl From<&kvm_fpu> for Fpu {
    fn from(f: &kvm_fpu) -> Fpu {
        Fpu {
            st: f.fpr.iter().map(|r| hex::encode(r)).collect(),
            fcw: f.fcw,
            fsw: f.fsw,
            ftwx: f.ftwx,
            last_opcode: f.last_opcode,
            last_ip: f.last_ip,
            last_dp: f.last_dp,
            xmm: f.xmm.iter().map(|r| hex::encode(r)).collect(),
            mxcsr: f.mxcsr,
        }
    }
}

impl Fpu {
    fn to_kvm(&self) -> Result<kvm_fpu, String> {
        let mut fpu = kvm_fpu {
            fcw: self.fcw,
            fsw: self.fsw,
            ftwx: self.ftwx,
            last_opcode: self.last_opcode,
            last_ip: self.last_ip,
            last_dp: self.last_dp,
            mxcsr: self.mxcsr,
            ..Default::default()
        };
        fill_registers(&mut fpu.fpr, &self.st, "st")?;
        fill_registers(&mut fpu.xmm, &self.xmm, "xmm")?;
        Ok(fpu)
    }
}

/// Fills 16-byte registers from their hex texts: exactly as many, each 16 bytes.
fn fill_registers<const N: usize>(
    registers: &mut [[u8; 16]; N],
    texts: &[String],
    name: &str,
) -> Result<(), String> {
    if texts.len() != N {
        return Err(format!(
            "{name}: {} registers where {N} were expected",
            texts.len()
        ));
    }
    for (register, text) in registers.iter_mut().zip(texts) {
        *register = hex::parse(text).map_err(|error| format!("{name}: {error}"))?;
    }
    Ok(())
}

/// One model-specific register.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Msr {
    /// Its number, e.g. 0x10 (the TSC), 0xc0000080 (EFER).
    #[serde(with = "u64_text")]
    pub index: u64,
    #[serde(with = "u64_text")]
    pub value: u64,
}

/// One CPUID leaf as the guest sees it: what `cpuid` returns for EAX = `function` (and
/// ECX = `index`, for the leaves that have sub-leaves).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CpuidLeaf {
    #[serde(with = "u64_text")]
    pub function: u64,
    pub index: u32,
    /// KVM_CPUID_FLAG_*: bit 0, the leaf has sub-leaves.
    pub flags: u32,
    #[serde(with = "u64_text")]
    pub eax: u64,
    #[serde(with = "u64_text")]
    pub ebx: u64,
    #[serde(with = "u64_text")]
    pub ecx: u64,
    #[serde(with = "u64_text")]
    pub edx: u64,
}

impl From<&kvm_cpuid_entry2> for CpuidLeaf {
    fn from(e: &kvm_cpuid_entry2) -> CpuidLeaf {
        CpuidLeaf {
            function: e.function.into(),
            index: e.index,
            flags: e.flags,
            eax: e.eax.into(),
            ebx: e.ebx.into(),
            ecx: e.ecx.into(),
            edx: e.edx.into(),
        }
    }
}

impl CpuidLeaf {
    fn to_kvm(&self) -> Result<kvm_cpuid_entry2, String> {
        let word = |value: u64, name: &str| {
            u32::try_from(value).map_err(|_| format!("cpuid {name} {value:#x} is over 32 bits"))
        };
        Ok(kvm_cpuid_entry2 {
            function: word(self.function, "function")?,
            index: self.index,
            flags: self.flags,
            eax: word(self.eax, "eax")?,
            ebx: word(self.ebx, "ebx")?,
            ecx: word(self.ecx, "ecx")?,
            edx: word(self.edx, "edx")?,
            ..Default::default()
        })
    }
}

/// Everything of one vCPU.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VcpuState {
    /// The CPUID table the vCPU was given (KVM_GET_CPUID2): what the guest learnt of its CPU,
    /// which must not change under it. Absent for a guest without the irqchip, which gets
    /// KVM's default.
    pub cpuid: Option<Vec<CpuidLeaf>>,
    pub registers: Registers,
    pub special_registers: SpecialRegisters,
    pub fpu: Fpu,
    /// KVM_GET_XSAVE's area (4 KiB), as hex; absent on a host without KVM_CAP_XSAVE.
    pub xsave: Option<String>,
    /// KVM_GET_XCRS, as hex; absent on a host without KVM_CAP_XCRS.
    pub xcrs: Option<String>,
    /// The local APIC's registers (KVM_GET_LAPIC: its 1 KiB register page), as hex; absent
    /// without the in-kernel irqchip.
    pub lapic: Option<String>,
    /// The MSRs KVM lists (KVM_GET_MSR_INDEX_LIST) that it would read, the TSC (0x10) among them.
    pub msrs: Vec<Msr>,
    /// KVM_MP_STATE_*: 0 runnable, 3 halted (waiting for an interrupt), ...
    pub mp_state: u32,
    /// Exceptions, interrupts and NMIs in flight, and the interrupt shadow (KVM_GET_VCPU_EVENTS),
    /// as hex.
    pub events: String,
    /// DR0-DR3, DR6, DR7 (KVM_GET_DEBUGREGS), as hex.
    pub debug_registers: String,
    /// The TSC's frequency the guest sees, in kHz (KVM_GET_TSC_KHZ), when KVM says.
    pub tsc_khz: Option<u32>,
}

/// Turns a failed KVM call into a [`SnapshotError`] that names it.
fn call(name: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> SnapshotError {
    move |source| SnapshotError::Ioctl { call: name, source }
}

/// The most MSRs asked for in one KVM_GET_MSRS.
const MSR_BATCH: usize = 64;

/// Reads a vCPU's state. The vCPU must be out of KVM_RUN, with no access half done (the caller
/// completes it first: vcpu.rs).
pub fn capture(fd: &VcpuFd, capabilities: &VcpuCapabilities) -> Result<VcpuState, SnapshotError> {
    let xsave = if capabilities.xsave {
        Some(hex::of(&fd.get_xsave().map_err(call("KVM_GET_XSAVE"))?))
    } else {
        None
    };
    let xcrs = if capabilities.xcrs {
        Some(hex::of(&fd.get_xcrs().map_err(call("KVM_GET_XCRS"))?))
    } else {
        None
    };
    let lapic = if capabilities.lapic {
        Some(hex::of(&fd.get_lapic().map_err(call("KVM_GET_LAPIC"))?))
    } else {
        None
    };
    let cpuid = if capabilities.lapic {
        let table = fd
            .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
            .map_err(call("KVM_GET_CPUID2"))?;
        Some(table.as_slice().iter().map(CpuidLeaf::from).collect())
    } else {
        None
    };
    Ok(VcpuState {
        cpuid,
        registers: (&fd.get_regs().map_err(call("KVM_GET_REGS"))?).into(),
        special_registers: (&fd.get_sregs().map_err(call("KVM_GET_SREGS"))?).into(),
        fpu: (&fd.get_fpu().map_err(call("KVM_GET_FPU"))?).into(),
        xsave,
        xcrs,
        lapic,
        msrs: read_msrs(fd, &capabilities.msr_indices)?,
        mp_state: fd
            .get_mp_state()
            .map_err(call("KVM_GET_MP_STATE"))?
            .mp_state,
        events: hex::of(&fd.get_vcpu_events().map_err(call("KVM_GET_VCPU_EVENTS"))?),
        debug_registers: hex::of(&fd.get_debug_regs().map_err(call("KVM_GET_DEBUGREGS"))?),
        tsc_khz: fd.get_tsc_khz().ok(),
    })
}

/// Reads the MSRs KVM lists. KVM_GET_MSRS stops at the first MSR it cannot read (one the
/// host's CPU lacks) and says how many it read: that one is left out and the rest read on, as
/// cloud-hypervisor does.
fn read_msrs(fd: &VcpuFd, indices: &[u32]) -> Result<Vec<Msr>, SnapshotError> {
    let mut saved = Vec::with_capacity(indices.len());
    let mut rest = indices;
    while !rest.is_empty() {
        let batch = &rest[..rest.len().min(MSR_BATCH)];
        let entries: Vec<kvm_msr_entry> = batch
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries)
            .map_err(|_| SnapshotError::Invalid("too many MSRs in one call".into()))?;
        let read = fd.get_msrs(&mut msrs).map_err(call("KVM_GET_MSRS"))?;
        saved.extend(msrs.as_slice()[..read].iter().map(|entry| Msr {
            index: entry.index.into(),
            value: entry.data,
        }));
        // Past what was read, and past the MSR that stopped it.
        rest = &rest[(read + 1).min(rest.len())..];
    }
    Ok(saved)
}

/// Gives a new vCPU, not yet run, the CPUID table it had.
pub fn restore_cpuid(fd: &VcpuFd, state: &VcpuState) -> Result<(), SnapshotError> {
    let Some(leaves) = &state.cpuid else {
        return Ok(());
    };
    let entries = leaves
        .iter()
        .map(CpuidLeaf::to_kvm)
        .collect::<Result<Vec<_>, _>>()
        .map_err(SnapshotError::Invalid)?;
    let table = CpuId::from_entries(&entries).map_err(|_| {
        SnapshotError::Invalid(format!("{} CPUID leaves is too many", entries.len()))
    })?;
    fd.set_cpuid2(&table).map_err(call("KVM_SET_CPUID2"))
}

/// Puts a saved state into a new vCPU, given its CPUID first. The order matters: the
/// special registers (the APIC base among them) before the local APIC, the local APIC before
/// the MSRs (the TSC deadline is relative to the TSC, which goes first), and the pending events
/// last, on a CPU that is otherwise complete.
pub fn restore(fd: &VcpuFd, state: &VcpuState) -> Result<(), SnapshotError> {
    let invalid = |part: &str, error: String| SnapshotError::Invalid(format!("{part}: {error}"));
    fd.set_regs(&(&state.registers).into())
        .map_err(call("KVM_SET_REGS"))?;
    fd.set_sregs(&(&state.special_registers).into())
        .map_err(call("KVM_SET_SREGS"))?;
    let fpu = state.fpu.to_kvm().map_err(|e| invalid("fpu", e))?;
    fd.set_fpu(&fpu).map_err(call("KVM_SET_FPU"))?;
    if let Some(text) = &state.xsave {
        let xsave = hex::parse(text).map_err(|e| invalid("xsave", e))?;
        // SAFETY: a 4 KiB area as KVM_GET_XSAVE gave it on a host of the same kind (checked at
        // load): KVM reads no more than that, as no larger area (KVM_CAP_XSAVE2) was saved.
        unsafe { fd.set_xsave(&xsave) }.map_err(call("KVM_SET_XSAVE"))?;
    }
    if let Some(text) = &state.xcrs {
        let xcrs = hex::parse(text).map_err(|e| invalid("xcrs", e))?;
        fd.set_xcrs(&xcrs).map_err(call("KVM_SET_XCRS"))?;
    }
    let debug = hex::parse(&state.debug_registers).map_err(|e| invalid("debug_registers", e))?;
    fd.set_debug_regs(&debug)
        .map_err(call("KVM_SET_DEBUGREGS"))?;
    if let Some(text) = &state.lapic {
        let lapic = hex::parse(text).map_err(|e| invalid("lapic", e))?;
        fd.set_lapic(&lapic).map_err(call("KVM_SET_LAPIC"))?;
    }
    write_msrs(fd, &state.msrs)?;
    fd.set_mp_state(kvm_mp_state {
        mp_state: state.mp_state,
    })
    .map_err(call("KVM_SET_MP_STATE"))?;
    let events = hex::parse(&state.events).map_err(|e| invalid("events", e))?;
    fd.set_vcpu_events(&events)
        .map_err(call("KVM_SET_VCPU_EVENTS"))?;
    Ok(())
}

/// An MSR's number, which is 32 bits.
fn msr_number(msr: &Msr) -> Result<u32, SnapshotError> {
    u32::try_from(msr.index)
        .map_err(|_| SnapshotError::Invalid(format!("MSR {:#x} is over 32 bits", msr.index)))
}

/// The TSC's MSR: written first, so that what depends on it (the TSC deadline) follows.
const MSR_IA32_TSC: u32 = 0x10;

/// Writes the saved MSRs back, the TSC first. KVM_SET_MSRS stops at the first MSR it refuses:
/// one whose value a new vCPU has already is left as it is (KVM refuses writes to its own
/// paravirtual MSRs when the guest's CPUID does not offer them, even of the value they hold);
/// any other refusal is an error that names the MSR.
fn write_msrs(fd: &VcpuFd, msrs: &[Msr]) -> Result<(), SnapshotError> {
    let is_tsc = |msr: &&Msr| msr.index == u64::from(MSR_IA32_TSC);
    let mut ordered: Vec<&Msr> = msrs.iter().filter(is_tsc).collect();
    ordered.extend(msrs.iter().filter(|msr| !is_tsc(msr)));
    let mut rest = &ordered[..];
    while !rest.is_empty() {
        let batch = &rest[..rest.len().min(MSR_BATCH)];
        let entries = batch
            .iter()
            .map(|msr| {
                Ok(kvm_msr_entry {
                    index: msr_number(msr)?,
                    data: msr.value,
                    ..Default::default()
                })
            })
            .collect::<Result<Vec<_>, SnapshotError>>()?;
        let list = Msrs::from_entries(&entries)
            .map_err(|_| SnapshotError::Invalid("too many MSRs in one call".into()))?;
        let written = fd.set_msrs(&list).map_err(call("KVM_SET_MSRS"))?;
        if written < batch.len() {
            let refused = batch[written];
            let now = read_msrs(fd, &[msr_number(refused)?])?;
            if now.first().map(|m| m.value) != Some(refused.value) {
                return Err(SnapshotError::Invalid(format!(
                    "KVM refused MSR {:#x} (value {:#x})",
                    refused.index, refused.value
                )));
            }
        }
        rest = &rest[(written + 1).min(rest.len())..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_registers_round_trip_through_json() {
        let regs = kvm_regs {
            rax: 0x1234,
            r15: u64::MAX,
            rip: 0x10_0000,
            rflags: 0x246,
            ..Default::default()
        };
        let segment = kvm_segment {
            base: 0xffff_0000,
            limit: 0xffff,
            selector: 0xf000,
            type_: 11,
            present: 1,
            s: 1,
            ..Default::default()
        };
        let sregs = kvm_sregs {
            cs: segment,
            tr: kvm_segment {
                type_: 11,
                ..segment
            },
            gdt: kvm_dtable {
                base: 0x1000,
                limit: 55,
                padding: [0; 3],
            },
            cr0: 0x8000_0011,
            efer: 0x500,
            apic_base: 0xfee0_0900,
            interrupt_bitmap: [1, 0, 0, 1 << 63],
            ..Default::default()
        };
        let mut fpu = kvm_fpu {
            fcw: 0x37f,
            mxcsr: 0x1f80,
            ..Default::default()
        };
        fpu.xmm[15][0] = 0xab;
        fpu.fpr[7][9] = 0xcd;

        let text = serde_json::to_string(&Registers::from(&regs)).unwrap();
        assert!(text.contains("\"rip\":\"0x100000\""), "{text}");
        let back: Registers = serde_json::from_str(&text).unwrap();
        assert_eq!(kvm_regs::from(&back), regs);

        let text = serde_json::to_string(&SpecialRegisters::from(&sregs)).unwrap();
        let back: SpecialRegisters = serde_json::from_str(&text).unwrap();
        assert_eq!(kvm_sregs::from(&back), sregs);

        let text = serde_json::to_string(&Fpu::from(&fpu)).unwrap();
        let back: Fpu = serde_json::from_str(&text).unwrap();
        assert_eq!(back.to_kvm().unwrap(), fpu);

        let mut short = Fpu::from(&fpu);
        short.xmm.pop();
        assert_eq!(
            short.to_kvm(),
            Err("xmm: 15 registers where 16 were expected".to_string())
        );
    }

    #[test]
    fn cpuid_leaves_round_trip_and_stay_32_bits() {
        let entry = kvm_cpuid_entry2 {
            function: 0x8000_0001,
            index: 0,
            flags: 0,
            eax: 0xa00f11,
            ebx: 0x4000_0000,
            ecx: 0x40_0393,
            edx: 0x23d3_fbff,
            ..Default::default()
        };
        let leaf = CpuidLeaf::from(&entry);
        assert_eq!(leaf.to_kvm(), Ok(entry));
        let wide = CpuidLeaf {
            eax: 1 << 32,
            ..leaf
        };
        assert_eq!(
            wide.to_kvm(),
            Err("cpuid eax 0x100000000 is over 32 bits".to_string())
        );
    }
}
