//! Real / protected / long mode: recognising the mode a vCPU is in, and the register state a
//! guest starts with.

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};

use super::gdt::{self, GDT_LIMIT};
use super::layout::GDT_ADDRESS;

/// CR0.PE: protected mode enable.
pub const CR0_PE: u64 = 1 << 0;
/// CR0.ET: "extension type", hard-wired to 1 since the 486.
pub const CR0_ET: u64 = 1 << 4;
/// CR0.PG: paging enabled.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PSE: 4 MiB pages in 32-bit paging.
pub const CR4_PSE: u64 = 1 << 4;
/// CR4.PAE: 64-bit page table entries (required for long mode).
pub const CR4_PAE: u64 = 1 << 5;
/// EFER.LME: long mode enable.
pub const EFER_LME: u64 = 1 << 8;
/// EFER.LMA: long mode active.
pub const EFER_LMA: u64 = 1 << 10;
/// RFLAGS bit 1 is reserved and always reads as 1.
pub const RFLAGS_RESERVED: u64 = 1 << 1;
/// RFLAGS.IF: maskable interrupts enabled.
pub const RFLAGS_IF: u64 = 1 << 9;

/// The operating mode of a vCPU, as far as the width of its registers is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuMode {
    /// 16-bit real mode (CR0.PE = 0).
    Real,
    /// Protected mode with a 16-bit code segment.
    Protected16,
    /// Protected mode with a 32-bit code segment.
    Protected32,
    /// Long mode with a 64-bit code segment.
    Long64,
}

impl CpuMode {
    /// Works out the mode from the control registers and the code segment.
    pub fn of(sregs: &kvm_sregs) -> CpuMode {
        if sregs.cr0 & CR0_PE == 0 {
            CpuMode::Real
        } else if sregs.efer & EFER_LMA != 0 && sregs.cs.l != 0 {
            CpuMode::Long64
        } else if sregs.cs.db != 0 {
            CpuMode::Protected32
        } else {
            CpuMode::Protected16
        }
    }

    /// Width of a general-purpose register in this mode, in bits.
    pub fn bits(self) -> u32 {
        match self {
            CpuMode::Real | CpuMode::Protected16 => 16,
            CpuMode::Protected32 => 32,
            CpuMode::Long64 => 64,
        }
    }

    /// Mask selecting a register's low `bits()` bits.
    pub fn register_mask(self) -> u64 {
        match self.bits() {
            64 => u64::MAX,
            bits => (1u64 << bits) - 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CpuMode::Real => "real mode (16-bit)",
            CpuMode::Protected16 => "protected mode (16-bit code)",
            CpuMode::Protected32 => "protected mode (32-bit)",
            CpuMode::Long64 => "long mode (64-bit)",
        }
    }
}

/// A real-mode segment: base = selector × 16, 64 KiB limit, the attributes a CPU has after
/// reset (present, read/write data or execute/read code, accessed).
fn real_mode_segment(selector: u16, is_code: bool) -> kvm_segment {
    kvm_segment {
        base: u64::from(selector) << 4,
        limit: 0xffff,
        selector,
        type_: if is_code { 0xb } else { 0x3 },
        present: 1,
        dpl: 0,
        db: 0,
        s: 1,
        l: 0,
        g: 0,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Sets up `sregs` and `regs` for a flat real-mode program: every segment register holds
/// `segment`, execution starts at `segment:0000`, and the stack starts at `segment:0000` too, so
/// the first push lands at offset 0xFFFE, the top of the 64 KiB segment.
pub fn setup_real_mode(sregs: &mut kvm_sregs, regs: &mut kvm_regs, segment: u16) {
    sregs.cs = real_mode_segment(segment, true);
    for data_segment in [
        &mut sregs.ds,
        &mut sregs.es,
        &mut sregs.fs,
        &mut sregs.gs,
        &mut sregs.ss,
    ] {
        *data_segment = real_mode_segment(segment, false);
    }
    // Real mode: no protection, no paging, no long mode.
    sregs.cr0 &= !CR0_PE;
    sregs.efer = 0;

    *regs = kvm_regs {
        rip: 0,
        rsp: 0,
        // Interrupts off, as after reset: a `hlt` then ends the guest instead of waiting forever.
        rflags: RFLAGS_RESERVED,
        ..Default::default()
    };
}

/// Where a guest that does not start in real mode begins, and what it finds in its registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRegisters {
    /// EIP/RIP: the entry point (a linear address; segments are flat).
    pub entry: u64,
    /// ESP/RSP.
    pub stack: u64,
    /// EAX and EBX: boot protocols pass a magic number and an info pointer in them.
    pub rax: u64,
    pub rbx: u64,
    /// RSI: the Linux 64-bit boot protocol's pointer to the zero page (`boot_params`).
    pub rsi: u64,
}

/// Flat segments from the VMM's GDT, GDTR and TR (the parts shared by 32- and 64-bit entry).
fn load_flat_segments(sregs: &mut kvm_sregs, code: kvm_segment, data: kvm_segment) {
    sregs.cs = code;
    for data_segment in [
        &mut sregs.ds,
        &mut sregs.es,
        &mut sregs.fs,
        &mut sregs.gs,
        &mut sregs.ss,
    ] {
        *data_segment = data;
    }
    sregs.gdt.base = GDT_ADDRESS;
    sregs.gdt.limit = GDT_LIMIT;
    // Hardware KVM refuses to enter protected mode with an unusable task register.
    sregs.tr = gdt::task_register();
}

fn entry_regs(entry: &EntryRegisters) -> kvm_regs {
    kvm_regs {
        rip: entry.entry,
        rsp: entry.stack,
        rax: entry.rax,
        rbx: entry.rbx,
        rsi: entry.rsi,
        // Interrupts off: the guest turns them on once it has an IDT.
        rflags: RFLAGS_RESERVED,
        ..Default::default()
    }
}

/// 32-bit protected mode, flat 4 GiB segments. `page_directory` (CR3) turns on paging with
/// 4 MiB pages (src/arch/x86/paging.rs); `None` leaves paging off.
pub fn setup_protected_mode(
    sregs: &mut kvm_sregs,
    regs: &mut kvm_regs,
    entry: &EntryRegisters,
    page_directory: Option<u64>,
) {
    let (code, data) = gdt::protected_mode_segments();
    load_flat_segments(sregs, code, data);
    sregs.efer = 0;
    sregs.cr0 = CR0_PE | CR0_ET;
    sregs.cr4 = 0;
    sregs.cr3 = 0;
    if let Some(cr3) = page_directory {
        sregs.cr3 = cr3;
        sregs.cr4 = CR4_PSE;
        sregs.cr0 |= CR0_PG;
    }
    *regs = entry_regs(entry);
}

/// 64-bit long mode: PAE paging with the 4-level tables at `pml4`, EFER.LME and LMA, a 64-bit
/// code segment. KVM takes this state in one `KVM_SET_SREGS`; a real CPU would have to get there
/// step by step through protected mode (guests/long/long_hello.S explains the steps).
pub fn setup_long_mode(
    sregs: &mut kvm_sregs,
    regs: &mut kvm_regs,
    entry: &EntryRegisters,
    pml4: u64,
) {
    let (_, data) = gdt::protected_mode_segments();
    load_flat_segments(sregs, gdt::long_mode_code_segment(), data);
    sregs.cr3 = pml4;
    sregs.cr4 = CR4_PAE;
    sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
    sregs.efer = EFER_LME | EFER_LMA;
    *regs = entry_regs(entry);
}
