//! The vCPU run loop: `KVM_RUN`, then hand the exit to the bus, until the guest ends.
//!
//! The loop knows no port numbers and no devices: every `in`/`out` goes to the [`PortBus`].
//! Registers travel through `kvm_run`'s shared `sync_regs` area (KVM_CAP_SYNC_REGS): KVM stores
//! them there at every exit, and loads RAX back from there when a hypercall has set it, so the
//! hypercall path makes no KVM_GET_REGS / KVM_SET_REGS ioctls.
//!
//! Writes to coalesced ports (the UART's transmit register, the debug console: see
//! `Vm::create`) do not exit at all: KVM appends them to a ring shared with us, which the loop
//! drains, in order, before it handles the next exit and when the guest ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use kvm_bindings::{KVM_INTERNAL_ERROR_EMULATION, KVM_MP_STATE_HALTED, kvm_regs, kvm_sregs};
use kvm_ioctls::{SyncReg, VcpuExit, VcpuFd};
use vm_memory::GuestMemoryMmap;

use super::exit::Fault;
use super::memory::read_prefix;
use super::snapshot::{CpuSnapshot, ExitCause};
use super::stats::{COALESCED, ExitStats, LiveCounters};
use super::vm::OutputCoalescing;
use crate::arch::CpuMode;
use crate::arch::x86::modes::{CR0_PG, RFLAGS_IF};
use crate::devices::{GuestCpu, GuestStop, IoAction, PortBus};

/// KVM hands `in`/`out` data over in one page of `kvm_run` at most.
const MAX_PIO_DATA: usize = 4096;

/// Why the run loop returned.
pub enum VcpuEnd {
    /// A device stopped the guest (EXIT hypercall, reboot).
    Stopped(GuestStop),
    /// `hlt` with interrupts off.
    Halted,
    Faulted(Fault, Box<CpuSnapshot>),
    /// Another thread asked the loop to stop (`--timeout`); where the guest was.
    Interrupted(Box<CpuSnapshot>),
}

/// An exit, copied out of `kvm_run` so the loop can use the vCPU again while handling it.
enum Exit {
    IoIn {
        port: u16,
        len: usize,
    },
    IoOut {
        port: u16,
        len: usize,
    },
    Hlt,
    Shutdown,
    InternalError {
        suberror: u32,
    },
    Mmio {
        address: u64,
        write: bool,
        len: usize,
    },
    FailEntry {
        reason: u64,
    },
    /// KVM_RUN returned EINTR: a signal kicked the vCPU out (see `Vm::run`).
    Interrupted,
    Other {
        reason: String,
    },
    RunFailed {
        error: String,
    },
}

impl Exit {
    fn reason(&self) -> &'static str {
        match self {
            Exit::IoIn { .. } => "IO_IN",
            Exit::IoOut { .. } => "IO_OUT",
            Exit::Hlt => "HLT",
            Exit::Shutdown => "SHUTDOWN",
            Exit::InternalError { .. } => "INTERNAL_ERROR",
            Exit::Mmio { .. } => "MMIO",
            Exit::FailEntry { .. } => "FAIL_ENTRY",
            Exit::Interrupted => "INTR",
            Exit::Other { .. } => "OTHER",
            Exit::RunFailed { .. } => "RUN_FAILED",
        }
    }
}

/// How a vCPU reports and what it may rely on.
pub struct VcpuOptions {
    /// `--verbose`: one line per exit on stderr.
    pub trace: bool,
    /// Put before each trace line: the guest's label when several guests run.
    pub trace_label: String,
    /// Coalesced I/O for the output-only ports, when the host has it (`--no-coalesce`: `None`).
    pub coalescing: Option<OutputCoalescing>,
}

pub struct Vcpu {
    fd: VcpuFd,
    memory: GuestMemoryMmap,
    bus: PortBus,
    /// `--verbose`: one line per exit on stderr.
    trace: bool,
    coalescing: Option<OutputCoalescing>,
    stats: ExitStats,
    /// The data of the current `out`, copied out of `kvm_run`; of the current `in`, before it
    /// is copied into `kvm_run`.
    out_data: Box<[u8; MAX_PIO_DATA]>,
    in_data: Box<[u8; MAX_PIO_DATA]>,
    /// Does this host's KVM complete an `in`/`out` before exiting (RIP already past it)?
    /// KVM's instruction emulator does (kvm_pvm); hardware KVM exits with RIP on it.
    io_completed_at_exit: bool,
    /// Put before each trace line: the guest's label when several guests run.
    trace_label: String,
    live: Arc<LiveCounters>,
}

impl Vcpu {
    pub fn new(
        fd: VcpuFd,
        memory: GuestMemoryMmap,
        bus: PortBus,
        options: VcpuOptions,
        live: Arc<LiveCounters>,
    ) -> Vcpu {
        Vcpu {
            fd,
            memory,
            bus,
            trace: options.trace,
            coalescing: options.coalescing,
            stats: ExitStats::default(),
            out_data: Box::new([0; MAX_PIO_DATA]),
            in_data: Box::new([0; MAX_PIO_DATA]),
            io_completed_at_exit: super::kvm::host_kvm_module() == "kvm_pvm",
            trace_label: options.trace_label,
            live,
        }
    }

    pub fn stats(&self) -> &ExitStats {
        &self.stats
    }

    pub fn bus(&self) -> &PortBus {
        &self.bus
    }

    /// Runs the guest until it ends, faults, or `stop` is set and the thread is kicked.
    pub fn run(&mut self, stop: &Arc<AtomicBool>) -> VcpuEnd {
        // Ask KVM to store the registers in kvm_run at every exit (KVM_CAP_SYNC_REGS).
        self.fd.set_sync_valid_reg(SyncReg::Register);
        self.fd.set_sync_valid_reg(SyncReg::SystemRegister);
        let started = Instant::now();
        let end = self.run_loop(stop);
        // Writes the guest made since its last exit.
        self.drain_coalesced();
        self.bus.flush();
        self.stats.total = started.elapsed();
        end
    }

    fn run_loop(&mut self, stop: &Arc<AtomicBool>) -> VcpuEnd {
        let mut exit_number: u64 = 0;
        loop {
            if stop.load(Ordering::Acquire) {
                return VcpuEnd::Interrupted(Box::new(self.snapshot()));
            }
            let exit = self.enter_guest();
            // Coalesced writes happened before this exit: they go first, in order.
            self.drain_coalesced();
            if matches!(exit, Exit::Interrupted) {
                if self.halted_with_interrupts_off() {
                    return VcpuEnd::Halted;
                }
                continue;
            }
            exit_number += 1;
            self.live.count_exit();
            self.stats.count(exit.reason());
            if let Exit::IoIn { port, len } = exit {
                // An `in` is answered before it is traced, so the trace can show the data.
                self.stats
                    .count_port(port, "in", self.bus.device_name(port));
                self.bus.read(port, &mut self.in_data[..len]);
                complete_port_in(&mut self.fd, &self.in_data[..len]);
            }
            if self.trace {
                self.trace_exit(exit_number, &exit);
            }
            match exit {
                Exit::IoIn { .. } => {}
                Exit::IoOut { port, len } => {
                    self.stats
                        .count_port(port, "out", self.bus.device_name(port));
                    let mut cpu = ExitCpu::new(&mut self.fd);
                    let data = &self.out_data[..len];
                    if let IoAction::Stop(stop) = self.bus.write(port, data, &mut cpu) {
                        return VcpuEnd::Stopped(stop);
                    }
                    if let Some(coalescing) = &mut self.coalescing {
                        coalescing.note_write(port);
                    }
                }
                Exit::Hlt => {
                    let mut snapshot = self.snapshot();
                    if snapshot.regs.rflags & RFLAGS_IF == 0 {
                        return VcpuEnd::Halted;
                    }
                    snapshot.caused_by = Some(snapshot.exit_instruction(ExitCause::Halt, true));
                    return VcpuEnd::Faulted(Fault::HaltedForever, Box::new(snapshot));
                }
                Exit::Shutdown => return self.fault(Fault::TripleFault),
                Exit::InternalError { suberror } => {
                    return self.fault(if suberror == KVM_INTERNAL_ERROR_EMULATION {
                        Fault::EmulationFailure
                    } else {
                        Fault::InternalError { suberror }
                    });
                }
                Exit::Mmio {
                    address,
                    write,
                    len,
                } => {
                    let mut snapshot = self.snapshot();
                    if write {
                        snapshot.caused_by =
                            Some(snapshot.exit_instruction(ExitCause::MemoryWrite, true));
                    }
                    let fault = Fault::UnhandledMmio {
                        address,
                        write,
                        len,
                    };
                    return VcpuEnd::Faulted(fault, Box::new(snapshot));
                }
                Exit::FailEntry { reason } => return self.fault(Fault::FailedEntry { reason }),
                Exit::Other { reason } => return self.fault(Fault::UnhandledExit { reason }),
                Exit::RunFailed { error } => return self.fault(Fault::RunFailed { error }),
                Exit::Interrupted => unreachable!("handled above"),
            }
        }
    }

    /// With the in-kernel irqchip, `hlt` never exits to mini-kvm: KVM blocks the vCPU until an
    /// interrupt can be taken. After `cli; hlt` none ever can (mini-kvm sends no NMI), so the
    /// guest has ended, as a `hlt` with interrupts off ends a guest without an irqchip. Only a
    /// kick shows it: `Vm::run` kicks a vCPU that has made no exit for a while.
    fn halted_with_interrupts_off(&mut self) -> bool {
        let halted = self
            .fd
            .get_mp_state()
            .is_ok_and(|state| state.mp_state == KVM_MP_STATE_HALTED);
        halted
            && self
                .fd
                .get_regs()
                .is_ok_and(|regs| regs.rflags & RFLAGS_IF == 0)
    }

    /// One KVM_RUN. `out` data is copied out of `kvm_run`, so that the device may look at the
    /// vCPU's registers while it handles the write.
    fn enter_guest(&mut self) -> Exit {
        let entered = Instant::now();
        let result = self.fd.run();
        self.stats.in_guest += entered.elapsed();
        match result {
            // The device answers after the coalesced writes are drained (in run_loop).
            Ok(VcpuExit::IoIn(port, data)) => Exit::IoIn {
                port,
                len: data.len().min(MAX_PIO_DATA),
            },
            Ok(VcpuExit::IoOut(port, data)) => {
                let len = data.len().min(MAX_PIO_DATA);
                self.out_data[..len].copy_from_slice(&data[..len]);
                Exit::IoOut { port, len }
            }
            Ok(VcpuExit::Hlt) => Exit::Hlt,
            Ok(VcpuExit::Shutdown) => Exit::Shutdown,
            Ok(VcpuExit::InternalError) => {
                // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the
                // union member KVM filled in.
                let suberror = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal.suberror };
                Exit::InternalError { suberror }
            }
            Ok(VcpuExit::MmioRead(address, data)) => Exit::Mmio {
                address,
                write: false,
                len: data.len(),
            },
            Ok(VcpuExit::MmioWrite(address, data)) => Exit::Mmio {
                address,
                write: true,
                len: data.len(),
            },
            Ok(VcpuExit::FailEntry(reason, _cpu)) => Exit::FailEntry { reason },
            Ok(other) => Exit::Other {
                reason: format!("{other:?}"),
            },
            Err(error) if error.errno() == libc::EINTR || error.errno() == libc::EAGAIN => {
                Exit::Interrupted
            }
            Err(error) => Exit::RunFailed {
                error: error.to_string(),
            },
        }
    }

    /// Hands the writes KVM queued on the coalesced-I/O ring to their devices, in order.
    fn drain_coalesced(&mut self) {
        if !self
            .coalescing
            .as_ref()
            .is_some_and(OutputCoalescing::active)
        {
            return;
        }
        while let Ok(Some(entry)) = self.fd.coalesced_mmio_read() {
            let port = entry.phys_addr as u16;
            let len = (entry.len as usize).min(entry.data.len());
            let device = self.bus.device_name(port);
            self.stats.count_port(port, COALESCED, device);
            if self.trace {
                let data = &entry.data[..len];
                eprintln!(
                    "{}  coalesced write: port {port:#06x} ({device}), size {len}, data {}",
                    self.trace_label,
                    port_data(data)
                );
            }
            let mut cpu = ExitCpu::new(&mut self.fd);
            // Only the UART and the debug console are coalesced: their writes never stop the
            // guest.
            let _ = self.bus.write(port, &entry.data[..len], &mut cpu);
        }
    }

    fn fault(&mut self, fault: Fault) -> VcpuEnd {
        VcpuEnd::Faulted(fault, Box::new(self.snapshot()))
    }

    /// The registers (as KVM stored them at the last exit) and the code bytes at RIP.
    pub fn snapshot(&mut self) -> CpuSnapshot {
        let sync = self.fd.sync_regs();
        let (mut regs, sregs) = match (self.fd.get_regs(), self.fd.get_sregs()) {
            (Ok(regs), Ok(sregs)) => (regs, sregs),
            _ => (sync.regs, sync.sregs),
        };
        // A hypercall result not yet loaded by KVM (it is, at the next KVM_RUN) is the truth.
        if self.fd.get_kvm_run().kvm_dirty_regs & u64::from(kvm_bindings::KVM_SYNC_X86_REGS) != 0 {
            regs = sync.regs;
        }
        snapshot_of(&mut self.fd, &self.memory, regs, sregs)
    }

    /// The `--verbose` line for one exit.
    fn trace_exit(&mut self, number: u64, exit: &Exit) {
        let sync = self.fd.sync_regs();
        let cpu = snapshot_of(&mut self.fd, &self.memory, sync.regs, sync.sregs);
        let detail = match exit {
            Exit::IoIn { port, len } => format!(
                "port {port:#06x} ({}) in, size {len}, data {}",
                self.bus.device_name(*port),
                port_data(&self.in_data[..*len])
            ),
            Exit::IoOut { port, len } => {
                format!(
                    "port {port:#06x} ({}) out, size {len}, data {}",
                    self.bus.device_name(*port),
                    port_data(&self.out_data[..*len])
                )
            }
            Exit::InternalError { suberror } => format!("suberror {suberror}"),
            Exit::Mmio {
                address,
                write,
                len,
            } => format!(
                "{} {len} bytes at {address:#x}",
                if *write { "write" } else { "read" }
            ),
            Exit::FailEntry { reason } => format!("hardware reason {reason:#x}"),
            Exit::Other { reason } => reason.clone(),
            Exit::RunFailed { error } => error.clone(),
            Exit::Hlt | Exit::Shutdown | Exit::Interrupted => String::new(),
        };
        let completed = self.io_completed_at_exit;
        let instruction = match exit {
            Exit::IoIn { .. } => cpu.exit_instruction(ExitCause::PortIn, completed),
            Exit::IoOut { .. } => cpu.exit_instruction(ExitCause::PortOut, completed),
            Exit::Hlt => cpu.exit_instruction(ExitCause::Halt, completed),
            Exit::Mmio { write: true, .. } => {
                cpu.exit_instruction(ExitCause::MemoryWrite, completed)
            }
            _ => cpu.instruction(),
        };
        let line = format!(
            "{}exit #{number} {:<8} at {}  {instruction}  {detail}",
            self.trace_label,
            exit.reason(),
            cpu.location(),
        );
        eprintln!("{}", line.trim_end());
    }
}

/// Up to the first 8 bytes of port data, little-endian, for traces.
fn first_bytes(data: &[u8]) -> u64 {
    let mut value = [0u8; 8];
    let shown = data.len().min(8);
    value[..shown].copy_from_slice(&data[..shown]);
    u64::from_le_bytes(value)
}

/// Hands the data of an `in` to KVM: it lands in `kvm_run` at `io.data_offset`, where KVM
/// takes it from at the next KVM_RUN to finish the instruction.
fn complete_port_in(fd: &mut VcpuFd, data: &[u8]) {
    let run = fd.get_kvm_run();
    // SAFETY: the last exit was KVM_EXIT_IO, so `io` is the union member KVM filled in; its
    // `data_offset` points inside the kvm_run mapping (KVM's API guarantees `size * count`
    // bytes there), and `data` is no longer than that.
    unsafe {
        let io = run.__bindgen_anon_1.io;
        let room = io.size as usize * io.count as usize;
        let target = (run as *mut kvm_bindings::kvm_run as *mut u8).add(io.data_offset as usize);
        std::ptr::copy_nonoverlapping(data.as_ptr(), target, data.len().min(room));
    }
}

/// Port data for traces: its value in hex, and a single printable byte as a character too.
fn port_data(data: &[u8]) -> String {
    let value = hex_value(first_bytes(data), data.len());
    match data {
        [byte @ 0x20..=0x7e] => format!("{value} '{}'", *byte as char),
        _ => value,
    }
}

fn hex_value(value: u64, len: usize) -> String {
    match len {
        1 => format!("{:#04x}", value as u8),
        2 => format!("{:#06x}", value as u16),
        4 => format!("{:#010x}", value as u32),
        _ => format!("{value:#x} ({len} bytes)"),
    }
}

/// Builds a snapshot, reading the code at CS.base + RIP through the guest's page tables.
fn snapshot_of(
    fd: &mut VcpuFd,
    memory: &GuestMemoryMmap,
    regs: kvm_regs,
    sregs: kvm_sregs,
) -> CpuSnapshot {
    let linear = if CpuMode::of(&sregs) == CpuMode::Long64 {
        regs.rip
    } else {
        sregs.cs.base.wrapping_add(regs.rip) & 0xffff_ffff
    };
    let mut code = [0u8; 15];
    let mut preceding = [0u8; 15];
    let (code_len, preceding_len) = match linear_to_physical(fd, &sregs, linear) {
        // Stay inside RIP's page: the pages around it may map elsewhere.
        Some(physical) => {
            let in_page = (4096 - (linear % 4096)) as usize;
            let len = code.len().min(in_page);
            let before = preceding.len().min((linear % 4096) as usize);
            (
                read_prefix(memory, physical, &mut code[..len]),
                read_prefix(memory, physical - before as u64, &mut preceding[..before]),
            )
        }
        None => (0, 0),
    };
    CpuSnapshot {
        regs,
        sregs,
        code,
        code_len,
        preceding,
        preceding_len,
        caused_by: None,
    }
}

/// Guest-linear to guest-physical: identity without paging, KVM_TRANSLATE with it.
fn linear_to_physical(fd: &VcpuFd, sregs: &kvm_sregs, linear: u64) -> Option<u64> {
    if sregs.cr0 & CR0_PG == 0 {
        return Some(linear);
    }
    match fd.translate_gva(linear) {
        Ok(translation) if translation.valid != 0 => Some(translation.physical_address),
        _ => None,
    }
}

/// The vCPU as the device handling an `out` sees it, through the sync_regs area.
struct ExitCpu<'a> {
    fd: &'a mut VcpuFd,
    /// Read once from the sync_regs area KVM filled at this exit (no copy of the whole area).
    mode: CpuMode,
    args: [u64; 3],
    data_segment_base: u64,
    paging: bool,
}

impl<'a> ExitCpu<'a> {
    fn new(fd: &'a mut VcpuFd) -> ExitCpu<'a> {
        let sync = fd.sync_regs_mut();
        let (mode, args) = (
            CpuMode::of(&sync.sregs),
            [sync.regs.rbx, sync.regs.rcx, sync.regs.rsi],
        );
        let (data_segment_base, paging) = (sync.sregs.ds.base, sync.sregs.cr0 & CR0_PG != 0);
        ExitCpu {
            fd,
            mode,
            args,
            data_segment_base,
            paging,
        }
    }
}

impl GuestCpu for ExitCpu<'_> {
    fn mode(&self) -> CpuMode {
        self.mode
    }

    fn hypercall_args(&self) -> [u64; 3] {
        self.args
    }

    fn set_result(&mut self, value: u64) {
        let regs = &mut self.fd.sync_regs_mut().regs;
        regs.rax = match self.mode.bits() {
            16 => (regs.rax & !0xffff) | (value & 0xffff),
            32 => value & 0xffff_ffff,
            _ => value,
        };
        // Tell KVM to load the registers from kvm_run at the next KVM_RUN.
        self.fd.set_sync_dirty_reg(SyncReg::Register);
    }

    fn data_segment_base(&self) -> u64 {
        self.data_segment_base
    }

    fn translate(&mut self, linear: u64) -> Option<u64> {
        if !self.paging {
            return Some(linear);
        }
        match self.fd.translate_gva(linear) {
            Ok(translation) if translation.valid != 0 => Some(translation.physical_address),
            _ => None,
        }
    }
}
