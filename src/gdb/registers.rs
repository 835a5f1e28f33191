//! A vCPU's registers in the two shapes gdb knows for x86: i386 (32-bit) and amd64 (64-bit).
//!
//! gdb learns one register set per connection, so the stub picks it from the mode the guest
//! starts in: amd64 for a 64-bit kernel, i386 for everything else (docs/gdb.md). Real mode has
//! no register set of its own in gdb; there, `eip` holds the *linear* address of the next
//! instruction (CS × 16 + IP), so that `x/i $pc`, `stepi` and `break *ADDRESS` all work on the
//! addresses the code is really at. Every address gdb sends is linear too.

use gdbstub::arch::Arch;
use gdbstub_arch::x86::reg::{X86_64CoreRegs, X86CoreRegs, X86SegmentRegs, X87FpuInternalRegs};
use gdbstub_arch::x86::{X86_64_SSE, X86_SSE};
use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};

use crate::arch::CpuMode;
use crate::vmm::debug::CpuState;

/// One of gdb's x86 register sets.
pub trait X86View: Arch<BreakpointKind = usize> {
    fn read(cpu: &CpuState, registers: &mut Self::Registers);
    /// Puts gdb's values of the general-purpose registers, the instruction pointer and the
    /// flags into `regs` (segments are left as they are: gdb cannot set their descriptors).
    fn write(registers: &Self::Registers, sregs: &kvm_sregs, regs: &mut kvm_regs);
    fn address(value: Self::Usize) -> u64;
    fn usize(address: u64) -> Self::Usize;
}

/// The instruction pointer gdb sees: linear in real mode (see the module's comment).
fn program_counter(regs: &kvm_regs, sregs: &kvm_sregs) -> u64 {
    if CpuMode::of(sregs) == CpuMode::Real {
        sregs.cs.base.wrapping_add(regs.rip) & 0xffff_ffff
    } else {
        regs.rip
    }
}

/// The RIP for the program counter gdb gives.
fn rip_of(pc: u64, sregs: &kvm_sregs) -> u64 {
    if CpuMode::of(sregs) == CpuMode::Real {
        pc.wrapping_sub(sregs.cs.base) & 0xffff
    } else {
        pc
    }
}

fn segments(sregs: &kvm_sregs) -> X86SegmentRegs {
    X86SegmentRegs {
        cs: u32::from(sregs.cs.selector),
        ss: u32::from(sregs.ss.selector),
        ds: u32::from(sregs.ds.selector),
        es: u32::from(sregs.es.selector),
        fs: u32::from(sregs.fs.selector),
        gs: u32::from(sregs.gs.selector),
    }
}

/// The x87 registers (80 bits each, in the first 10 bytes of KVM's 16) and state.
fn x87(fpu: &kvm_fpu) -> ([[u8; 10]; 8], X87FpuInternalRegs) {
    let mut st = [[0u8; 10]; 8];
    for (register, kvm) in st.iter_mut().zip(&fpu.fpr) {
        register.copy_from_slice(&kvm[..10]);
    }
    let internal = X87FpuInternalRegs {
        fctrl: u32::from(fpu.fcw),
        fstat: u32::from(fpu.fsw),
        ftag: u32::from(fpu.ftwx),
        fiseg: 0,
        fioff: fpu.last_ip as u32,
        foseg: 0,
        fooff: fpu.last_dp as u32,
        fop: u32::from(fpu.last_opcode),
    };
    (st, internal)
}

/// The first N SSE registers (i386 has 8, amd64 16).
fn xmm<const N: usize>(fpu: &kvm_fpu) -> [u128; N] {
    std::array::from_fn(|index| u128::from_le_bytes(fpu.xmm[index]))
}

impl X86View for X86_SSE {
    fn read(cpu: &CpuState, registers: &mut X86CoreRegs) {
        let regs = &cpu.regs;
        registers.eax = regs.rax as u32;
        registers.ecx = regs.rcx as u32;
        registers.edx = regs.rdx as u32;
        registers.ebx = regs.rbx as u32;
        registers.esp = regs.rsp as u32;
        registers.ebp = regs.rbp as u32;
        registers.esi = regs.rsi as u32;
        registers.edi = regs.rdi as u32;
        registers.eip = program_counter(regs, &cpu.sregs) as u32;
        registers.eflags = regs.rflags as u32;
        registers.segments = segments(&cpu.sregs);
        (registers.st, registers.fpu) = x87(&cpu.fpu);
        registers.xmm = xmm(&cpu.fpu);
        registers.mxcsr = cpu.fpu.mxcsr;
    }

    fn write(registers: &X86CoreRegs, sregs: &kvm_sregs, regs: &mut kvm_regs) {
        // The upper halves stay: gdb sees a 64-bit CPU's low 32 bits in this view.
        let low = |old: u64, new: u32| (old & !0xffff_ffff) | u64::from(new);
        regs.rax = low(regs.rax, registers.eax);
        regs.rcx = low(regs.rcx, registers.ecx);
        regs.rdx = low(regs.rdx, registers.edx);
        regs.rbx = low(regs.rbx, registers.ebx);
        regs.rsp = low(regs.rsp, registers.esp);
        regs.rbp = low(regs.rbp, registers.ebp);
        regs.rsi = low(regs.rsi, registers.esi);
        regs.rdi = low(regs.rdi, registers.edi);
        regs.rip = rip_of(u64::from(registers.eip), sregs);
        regs.rflags = u64::from(registers.eflags);
    }

    fn address(value: u32) -> u64 {
        u64::from(value)
    }

    fn usize(address: u64) -> u32 {
        address as u32
    }
}

/// KVM's general-purpose registers in gdb's amd64 order: RAX, RBX, RCX, RDX, RSI, RDI, RBP, RSP,
/// R8-R15.
fn amd64_order(r: &mut kvm_regs) -> [&mut u64; 16] {
    [
        &mut r.rax, &mut r.rbx, &mut r.rcx, &mut r.rdx, &mut r.rsi, &mut r.rdi, &mut r.rbp,
        &mut r.rsp, &mut r.r8, &mut r.r9, &mut r.r10, &mut r.r11, &mut r.r12, &mut r.r13,
        &mut r.r14, &mut r.r15,
    ]
}

impl X86View for X86_64_SSE {
    fn read(cpu: &CpuState, registers: &mut X86_64CoreRegs) {
        let mut regs = cpu.regs;
        for (register, value) in registers.regs.iter_mut().zip(amd64_order(&mut regs)) {
            *register = *value;
        }
        registers.rip = program_counter(&cpu.regs, &cpu.sregs);
        registers.eflags = cpu.regs.rflags as u32;
        registers.segments = segments(&cpu.sregs);
        (registers.st, registers.fpu) = x87(&cpu.fpu);
        registers.xmm = xmm(&cpu.fpu);
        registers.mxcsr = cpu.fpu.mxcsr;
    }

    fn write(registers: &X86_64CoreRegs, sregs: &kvm_sregs, regs: &mut kvm_regs) {
        for (slot, value) in amd64_order(regs).into_iter().zip(registers.regs) {
            *slot = value;
        }
        regs.rip = rip_of(registers.rip, sregs);
        regs.rflags = u64::from(registers.eflags);
    }

    fn address(value: u64) -> u64 {
        value
    }

    fn usize(address: u64) -> u64 {
        address
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn real_mode_cpu() -> CpuState {
        let mut cpu = CpuState::default();
        cpu.sregs.cs.selector = 0x1000;
        cpu.sregs.cs.base = 0x10000;
        cpu.regs.rip = 0x0005;
        cpu.regs.rax = 0x1234_5678_9abc_def0;
        cpu.regs.rflags = 0x2;
        cpu
    }

    #[test]
    fn in_real_mode_gdb_sees_the_linear_instruction_pointer() {
        let cpu = real_mode_cpu();
        let mut registers = X86CoreRegs::default();
        X86_SSE::read(&cpu, &mut registers);
        assert_eq!(registers.eip, 0x10005);
        assert_eq!(registers.segments.cs, 0x1000);
        assert_eq!(registers.eax, 0x9abc_def0);
        // And a PC gdb sets becomes CS:IP again; the upper half of RAX stays.
        registers.eip = 0x10010;
        registers.eax = 1;
        let mut regs = cpu.regs;
        X86_SSE::write(&registers, &cpu.sregs, &mut regs);
        assert_eq!(regs.rip, 0x10);
        assert_eq!(regs.rax, 0x1234_5678_0000_0001);
    }

    #[test]
    fn in_long_mode_gdb_sees_every_register_in_its_order() {
        let mut cpu = CpuState::default();
        cpu.sregs.cr0 = 0x8000_0011;
        cpu.sregs.efer = 0x500;
        cpu.sregs.cs.l = 1;
        cpu.sregs.cs.selector = 0x8;
        cpu.regs.rip = 0xffff_8000_0010_0000;
        cpu.regs.rbx = 2;
        cpu.regs.rsp = 8;
        cpu.regs.r15 = 16;
        let mut registers = X86_64CoreRegs::default();
        X86_64_SSE::read(&cpu, &mut registers);
        assert_eq!(registers.rip, 0xffff_8000_0010_0000);
        assert_eq!(registers.regs[1], 2);
        assert_eq!(registers.regs[7], 8);
        assert_eq!(registers.regs[15], 16);
        let mut regs = kvm_regs::default();
        X86_64_SSE::write(&registers, &cpu.sregs, &mut regs);
        assert_eq!(regs, cpu.regs);
    }
}
